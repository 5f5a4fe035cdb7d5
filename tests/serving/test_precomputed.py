"""The precomputed scorer on the trained bundle against Scorer.score_user, the app with it switched
off, and WDREC_FAST_PATH=require refusing a model whose precomputed scorer differs from forward."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from serving.loader import ModelLoadError, load_model
from serving.main import create_app
from serving.precomputed import Limits, PrecomputedScorer
from wdrec.data.features import SideTensors
from wdrec.export.bundle import read_bundle
from wdrec.export.scorer import Scorer


@pytest.fixture(scope="module", params=["binary", "regression"])
def scorer(request, bundle, regression_bundle) -> Scorer:  # noqa: ANN001
    return Scorer(read_bundle(bundle if request.param == "binary" else regression_bundle))


@pytest.mark.parametrize("limits", [Limits(), Limits(chunk=500, deep_block=300, cross_sums=0, known_wide=0, known_hidden=0)])
def test_precomputed_scorer_equals_score_user(scorer: Scorer, limits: Limits) -> None:
    """Both plans: the default (MovieLens fits every budget) and the large-catalogue one."""
    precomputed = PrecomputedScorer(scorer, limits)
    known = list(range(0, len(scorer.user_index), 97))
    users: list[tuple[SideTensors, int | None]] = [(scorer.users.take(torch.tensor([row])), row) for row in known]
    users.append((scorer.users.take(torch.tensor([scorer.unknown_row])), None))
    history = {"age": 31, "gender": "M", "occupation": "engineer", "history": ["50", "1", "181"], "recent": ["50"]}
    users.append((scorer.encode_user_features(history), None))
    users.append((scorer.encode_user_features({"occupation": "no-such-occupation"}), None))
    rows = torch.tensor([5, 0, 1681, 5, 300, 49])
    for user, user_row in users:
        exact = scorer.score_user(user)
        torch.testing.assert_close(precomputed.score(user, user_row=user_row), exact, atol=1e-5, rtol=0)
        torch.testing.assert_close(precomputed.score(user, rows, user_row), exact[rows], atol=1e-5, rtol=0)
        torch.testing.assert_close(precomputed.score(user), exact, atol=1e-5, rtol=0)  # a known user without its row


def test_skipped_rows_leave_the_other_scores_exact(scorer: Scorer) -> None:
    """Rows the caller discards may skip the history masking; every other row stays exact."""
    precomputed = PrecomputedScorer(scorer)
    row = max(range(len(scorer.user_index)), key=lambda r: len(scorer.seen_rows(r)))
    user = scorer.users.take(torch.tensor([row]))
    values = torch.cat([user.bags[f.name][0] for f in scorer.spec.history_fields()])
    in_history = torch.isin(scorer.spec.field_values("item_id", scorer.items)[:, 0], values[values > 0])
    skip = torch.zeros(len(scorer.item_ids), dtype=torch.bool)
    skip[::2] = True
    assert (in_history & skip).any() and (in_history & ~skip).any()  # both kinds of history rows occur
    scores, exact = precomputed.score(user, user_row=row, skip=skip), scorer.score_user(user)
    torch.testing.assert_close(scores[~skip], exact[~skip], atol=1e-5, rtol=0)


def test_regression_bundle_serves_ratings(regression_bundle, make_settings) -> None:  # noqa: ANN001
    scorer = Scorer(read_bundle(regression_bundle))
    with TestClient(create_app(str(regression_bundle), make_settings())) as client:
        info = client.get("/v1/model").json()
        assert (info["task"], info["name"], info["version"], info["fast_path"]) == ("regression", "wdrec-rating", "7", True)
        ids = ["1", "50", "181", "242"]
        scores = client.post("/v1/score", json={"user_id": "196", "item_ids": ids}).json()["scores"]
        assert scores == pytest.approx(scorer.score_pairs(["196"] * 4, ids).tolist(), abs=1e-5)
        assert any(s < 0 or s > 1 for s in scores)  # a rating head's raw output: not a probability
        items = client.post("/v1/recommend", json={"user_id": "196", "k": 5}).json()["items"]
        assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)


def test_exact_path_and_fast_path_agree(bundle, make_settings) -> None:  # noqa: ANN001
    bodies = [
        {"user_id": "196", "k": 20},
        {"user_id": "196", "k": 20, "exclude_seen": False},  # its history's items scored by forward itself
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


def test_require_refuses_a_model_whose_precomputed_scorer_differs(
    bundle, make_settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:  # noqa: ANN001
    """A broken decomposition: refused under "require" (naming the difference), else served by forward."""
    score = PrecomputedScorer.score
    monkeypatch.setattr(PrecomputedScorer, "score", lambda self, *args, **kwargs: score(self, *args, **kwargs) * 0.999)
    with pytest.raises(ModelLoadError, match=r"differs from the network's forward by [0-9.e-]+ \(user .*, item '\d+'\).*require"):
        load_model(str(bundle), fast_path="require")
    with pytest.raises(ModelLoadError, match="require"), TestClient(create_app(str(bundle), make_settings(fast_path="require"))):
        pass
    fallback = load_model(str(bundle), fast_path=True)
    assert fallback.info.fast_path is False and fallback.precomputed is None
    assert "scoring with Scorer.score_user" in caplog.text
