"""Two-stage recommendation: candidates from serving.retrieval, then the Wide&Deep ranking."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from serving.loader import load_model
from serving.main import create_app
from serving.recommender import recommend
from serving.served_model import ServedModel

CANDIDATES = 300


@pytest.fixture(scope="module")
def full(bundle) -> ServedModel:  # noqa: ANN001
    return load_model(str(bundle), fast_path="require")


@pytest.fixture(scope="module")
def two_stage(bundle) -> ServedModel:  # noqa: ANN001
    return load_model(str(bundle), fast_path="require", candidates=CANDIDATES)


def ids(recommendation) -> list[str]:  # noqa: ANN001
    return [item["item_id"] for item in recommendation.items]


def test_with_every_item_a_candidate_two_stage_ranks_exactly_as_full_scoring(
    bundle, full: ServedModel
) -> None:  # noqa: ANN001
    everything = load_model(str(bundle), fast_path="require", candidates=full.info.num_items)
    for user in [*list(full.user_rows)[::150], "a-user-never-seen"]:
        expected, got = recommend(full, user, 20), recommend(everything, user, 20)
        assert ids(got) == ids(expected)
        assert [i["score"] for i in got.items] == pytest.approx(
            [i["score"] for i in expected.items], abs=1e-6
        )


def test_candidates_are_distinct_never_blocked_and_as_many_as_asked(two_stage: ServedModel) -> None:
    retriever, catalogue = two_stage.retriever, two_stage.catalogue
    seen = two_stage.user(next(iter(two_stage.user_rows))).seen
    blocked = torch.zeros(catalogue.size, dtype=torch.bool)
    blocked[seen] = True
    blocked |= ~catalogue.filter_mask({"genres": "Comedy"})
    for minimum in (0, 500):
        rows = retriever.candidates(seen, blocked, minimum=minimum)
        assert len(rows) == min(
            max(CANDIDATES, minimum), int((~blocked).sum())
        )  # 500: more than the filter leaves
        assert len(set(rows.tolist())) == len(rows)
        assert not blocked[rows].any()


def test_a_user_without_history_gets_the_items_the_model_prefers_for_a_featureless_user(
    two_stage: ServedModel,
) -> None:
    rows = two_stage.retriever.candidates(torch.zeros(0, dtype=torch.long))
    prior = two_stage.score(two_stage.user("a-user-never-seen"))
    assert set(rows.tolist()) == set(torch.topk(prior, CANDIDATES).indices.tolist())


def test_candidates_hold_most_of_the_full_rankings_top_10_far_more_than_random_ones(
    full: ServedModel, two_stage: ServedModel
) -> None:
    users = list(full.user_rows)[:100]
    generator = torch.Generator().manual_seed(0)
    found = by_chance = 0
    for user in users:
        best = ids(recommend(full, user, 10))
        found += len(set(best) & set(ids(recommend(two_stage, user, 10))))
        unseen = torch.ones(full.catalogue.size, dtype=torch.bool)
        unseen[full.user(user).seen] = False
        pool = torch.nonzero(unseen).squeeze(1)
        drawn = pool[torch.randperm(len(pool), generator=generator)[:CANDIDATES]]
        by_chance += len(set(best) & {full.catalogue.ids[r] for r in drawn.tolist()})
    recall, random_recall = found / (10 * len(users)), by_chance / (10 * len(users))
    assert recall >= 0.8, f"candidate-stage recall@10 {recall:.3f}"
    assert recall >= 3 * random_recall, f"recall {recall:.3f} vs random candidates {random_recall:.3f}"


def test_the_service_says_it_ranks_candidates_and_answers_as_the_full_path_does(
    bundle, make_settings
) -> None:  # noqa: ANN001
    settings = make_settings(retrieval="two_stage", candidates=50)
    with TestClient(create_app(str(bundle), settings)) as client:
        assert client.get("/v1/model").json()["retrieval"] == "two_stage(50)"
        answer = client.post(
            "/v1/recommend", json={"user_id": "196", "k": 10, "filters": {"genres": "Drama"}}
        ).json()
        assert len(answer["items"]) == 10 and all("Drama" in item["genres"] for item in answer["items"])
        assert [i["score"] for i in answer["items"]] == sorted(
            (i["score"] for i in answer["items"]), reverse=True
        )
        more = client.post("/v1/recommend", json={"user_id": "196", "k": 80}).json()[
            "items"
        ]  # k above the candidates
        assert len(more) == 80
        cold = client.post(
            "/v1/recommend", json={"user_id": "new", "k": 5, "user_features": {"age": 30}}
        ).json()
        assert cold["cold_start"] is True and len(cold["items"]) == 5


def test_co_visited_candidates_follow_the_co_occurrence_formula(two_stage: ServedModel) -> None:
    """Dense reference: covisits = Xᵀ X h / sqrt(popularity), X the users × items interactions."""
    scorer = two_stage.reference
    x = torch.zeros((len(scorer.user_index), len(scorer.item_ids)))
    for row in range(len(scorer.user_index)):
        x[row, scorer.seen_rows(row)] = 1.0
    for row in (0, 400):
        history = scorer.seen_rows(row)
        covisits = x.T @ (x[:, history].sum(1)) / x.sum(0).clamp(min=1).sqrt()
        covisits[history] = 0.0  # blocked: seen
        blocked = torch.zeros(len(covisits), dtype=torch.bool)
        blocked[history] = True
        wanted = CANDIDATES - round(CANDIDATES * two_stage.retriever.prior_share)
        got = two_stage.retriever.candidates(history, blocked)[:wanted]
        assert set(got.tolist()) == set(torch.topk(covisits, wanted).indices.tolist())
