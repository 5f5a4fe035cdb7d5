"""The precomputed catalogue scorer against Scorer.score_user, and the app with it switched off."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from serving.main import create_app
from serving.scoring import CatalogueScorer
from wdrec.data.features import SideTensors
from wdrec.export.bundle import read_bundle
from wdrec.export.scorer import Scorer


@pytest.fixture(scope="module", params=["binary", "regression"])
def scorer(request, bundle, regression_bundle) -> Scorer:  # noqa: ANN001
    return Scorer(read_bundle(bundle if request.param == "binary" else regression_bundle))


def test_catalogue_scorer_equals_score_user(scorer: Scorer) -> None:
    fast = CatalogueScorer(scorer)
    known = list(range(0, len(scorer.user_index), 97))
    users: list[tuple[SideTensors, int | None]] = [(scorer.users.take(torch.tensor([row])), row) for row in known]
    users.append((scorer.users.take(torch.tensor([scorer.unknown_row])), None))
    history = {"age": 31, "gender": "M", "occupation": "engineer", "history": ["50", "1", "181"]}
    users.append((scorer.encode_user_features(history), None))
    users.append((scorer.encode_user_features({"occupation": "no-such-occupation"}), None))
    rows = torch.tensor([5, 0, 1681, 5, 300])
    for user, user_row in users:
        exact = scorer.score_user(user)
        assert torch.allclose(fast.score(user, user_row=user_row), exact, atol=1e-5, rtol=0)
        assert torch.allclose(fast.score(user, rows, user_row), exact[rows], atol=1e-5, rtol=0)
        assert torch.allclose(fast.score(user), exact, atol=1e-5, rtol=0)  # a known user without its row: recomputed
    assert fast.verify(scorer, users[:3]) <= 1e-5


def test_skipped_rows_leave_the_other_scores_exact(scorer: Scorer) -> None:
    """Rows the caller discards may skip the history masking; every other row stays exact."""
    fast = CatalogueScorer(scorer)
    row = max(range(len(scorer.user_index)), key=lambda r: len(scorer.bundle.users["seen"].iloc[r]))
    user = scorer.users.take(torch.tensor([row]))
    recent = user.bags["recent"][0]
    in_history = torch.zeros(len(scorer.item_ids), dtype=torch.bool)
    in_history[torch.isin(fast.candidate, recent[recent > 0])] = True
    skip = torch.zeros(len(scorer.item_ids), dtype=torch.bool)
    skip[::2] = True
    assert (in_history & skip).any() and (in_history & ~skip).any()  # both kinds of history rows occur
    scores, exact = fast.score(user, user_row=row, skip=skip), scorer.score_user(user)
    assert torch.allclose(scores[~skip], exact[~skip], atol=1e-5, rtol=0)


def test_regression_bundle_serves_ratings(regression_bundle, make_settings) -> None:  # noqa: ANN001
    scorer = Scorer(read_bundle(regression_bundle))
    with TestClient(create_app(str(regression_bundle), make_settings())) as client:
        info = client.get("/v1/model").json()
        assert (info["task"], info["name"], info["version"]) == ("regression", "wdrec-rating", "7")
        ids = ["1", "50", "181", "242"]
        scores = client.post("/v1/score", json={"user_id": "196", "item_ids": ids}).json()["scores"]
        assert scores == pytest.approx(scorer.score_pairs(["196"] * 4, ids).tolist(), abs=1e-5)
        assert any(s < 0 or s > 1 for s in scores)  # a rating head's raw output: not a probability
        items = client.post("/v1/recommend", json={"user_id": "196", "k": 5}).json()["items"]
        assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)


def test_exact_path_and_fast_path_agree(bundle, make_settings) -> None:  # noqa: ANN001
    bodies = [
        {"user_id": "196", "k": 20},
        {"user_id": "7", "k": 10, "filters": {"genres": "Drama"}},
        {"user_id": "new", "k": 10, "user_features": {"age": 40, "gender": "F", "history": ["50", "100"]}},
    ]
    answers = []
    for fast_path in (True, False):
        with TestClient(create_app(str(bundle), make_settings(fast_path=fast_path))) as client:
            assert client.get("/v1/model").json()["fast_path"] is fast_path
            answers.append([client.post("/v1/recommend", json=body).json()["items"] for body in bodies])
    for fast, exact in zip(*answers, strict=True):
        assert [i["score"] for i in fast] == pytest.approx([i["score"] for i in exact], abs=1e-5)
        assert {i["item_id"] for i in fast[:5]} == {i["item_id"] for i in exact[:5]}
