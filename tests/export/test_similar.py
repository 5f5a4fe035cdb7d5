"""Similar items: exact co-occurrence counts, never the item itself, genres shared above chance on
MovieLens-100k, and the same answers from the MLflow pyfunc model."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from helpers.random_models import EVERYTHING, ITEMS, TRAIN, USERS, Case, network

from wdrec.data.features import FeatureSpec
from wdrec.export.bundle import Bundle, read_bundle
from wdrec.export.scorer import Scorer
from wdrec.export.similar import CooccurrenceSimilarity, DeepSimilarity, SimilarItems, neighbours


@pytest.fixture(scope="module")
def movielens(trained_run) -> Scorer:  # noqa: ANN001
    return Scorer(read_bundle(trained_run.bundle))


def _synthetic(case: Case = EVERYTHING) -> Scorer:
    spec = FeatureSpec.fit(case.fields, case.crosses, TRAIN, USERS, ITEMS)
    return Scorer(Bundle(network(spec, case), spec, USERS, ITEMS))


def test_cooccurrence_is_the_cosine_of_who_interacted() -> None:
    scorer = _synthetic()
    users, items = scorer.seen_pairs()
    x = np.zeros((len(scorer.item_ids), len(scorer.user_index)))
    x[items, users] = 1.0  # repeats count once
    norms = np.sqrt(x.sum(1))
    expected = (x @ x.T) / np.maximum(np.outer(norms, norms), 1e-12)
    rows = torch.tensor([0, 5, 5, len(x) - 1, 3])
    np.testing.assert_allclose(CooccurrenceSimilarity(scorer).rows(rows).numpy(), expected[rows.numpy()], atol=1e-6)


def test_an_item_is_never_its_own_neighbour_and_order_is_best_first() -> None:
    scorer = _synthetic()
    for similarity in (CooccurrenceSimilarity(scorer), DeepSimilarity(scorer)):
        rows = torch.arange(len(scorer.item_ids))
        found, scores = neighbours(similarity, rows, 100)
        assert found.shape == (len(rows), len(rows) - 1)  # every other item, none twice
        assert not (found == rows.unsqueeze(1)).any()
        assert torch.equal(found.sort(1).values, torch.stack([torch.cat([rows[:r], rows[r + 1 :]]) for r in rows]))
        assert (scores[:, :-1] >= scores[:, 1:]).all()
        similar = SimilarItems(scorer, similarity)
        rows_of_4, scores_of_4 = similar.of(4, 3)  # one row alone: the same up to rounding
        assert rows_of_4 == found[4, :3].tolist() and np.allclose(scores_of_4, scores[4, :3], atol=1e-6)


def test_movielens_neighbours_share_genres_far_above_chance(movielens) -> None:  # noqa: ANN001
    """Over the 100 most popular films, the share of their 10 neighbours that share a genre with them
    against the share of all films that do (what random neighbours would get: about 0.35)."""
    names = sorted({g for genres in movielens.bundle.items["genres"] for g in genres})
    onehot = np.array([[g in set(genres) for g in names] for genres in movielens.bundle.items["genres"]], dtype=np.float32)
    share_genre = (onehot @ onehot.T) > 0  # (N, N)
    np.fill_diagonal(share_genre, False)
    users, items = movielens.seen_pairs()
    popular = np.argsort(-np.bincount(items, minlength=len(onehot)), kind="stable")[:100]
    similar = SimilarItems(movielens)
    shared = []
    for q in popular.tolist():
        found, _ = similar.of(q, 10)
        assert q not in found and len(found) == 10
        shared.append(share_genre[q, found].mean())
    chance = share_genre[popular].sum(1).mean() / (len(onehot) - 1)
    assert np.mean(shared) > chance + 0.2, (np.mean(shared), chance)
    star_wars = [movielens.bundle.items["title"].iloc[r] for r in similar.of(49, 5)[0]]  # item 50
    assert "Return of the Jedi" in star_wars and "Empire Strikes Back, The" in star_wars, star_wars


def test_the_registered_model_lists_similar_items(trained_run, movielens) -> None:  # noqa: ANN001
    """The champion as `wdrec fit` registered it: its signature declares ``similar_k`` (MLflow drops
    parameters a signature does not declare) and does not require ``user_id``."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(trained_run.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/wdrec@champion")
    finally:
        mlflow.set_tracking_uri(previous)
    out = model.predict(pd.DataFrame({"item_id": ["50", "1"]}), params={"similar_k": 4})
    assert list(out.columns) == ["item_id", "similar_item_id", "score", "rank"]
    assert out["item_id"].tolist() == ["50"] * 4 + ["1"] * 4 and out["rank"].tolist() == [1, 2, 3, 4] * 2
    similar = SimilarItems(movielens)
    for item_id, row in (("50", 49), ("1", 0)):
        found, scores = similar.of(row, 4)
        part = out[out["item_id"] == item_id]
        assert part["similar_item_id"].tolist() == movielens.item_ids[found].tolist()
        np.testing.assert_allclose(part["score"], scores, rtol=1e-6)
    pairs = pd.DataFrame({"user_id": ["196", "999999"], "item_id": ["242", "1"]})
    np.testing.assert_allclose(model.predict(pairs), movielens.score_pairs(["196", "999999"], ["242", "1"]), rtol=1e-6)
    with pytest.raises(Exception, match="unknown item ids: '999999'"):
        model.predict(pd.DataFrame({"item_id": ["999999"]}), params={"similar_k": 3})
