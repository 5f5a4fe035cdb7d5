"""Baselines on the data module's own evaluation rows (model cards, benchmarks/quality.py), on MovieLens-100k."""

from __future__ import annotations

import math

import pytest

from wdrec.data.datamodule import InteractionDataModule
from wdrec.data.sources.movielens import MovieLens
from wdrec.training.baselines import baselines, pointwise_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_rating_baselines_are_the_global_mean_and_biases_on_the_validation_rows(data_dir) -> None:
    dm = InteractionDataModule(MovieLens("100k"), split="random", target="rating", data_dir=str(data_dir))
    found, why = baselines(dm, "val")
    assert why is None and set(found) == {"global mean", "user + item biases"}
    assert len(pointwise_rows(dm, "val")["label"]) == len(dm.splits.val) == 10_000
    mean, biases = found["global mean"], found["user + item biases"]
    assert 1.05 < mean["rmse"] < 1.2  # ML-100k ratings' standard deviation is 1.13
    assert biases["rmse"] < mean["rmse"] - 0.1 and biases["mae"] < mean["mae"]


def test_binary_baselines_rank_by_popularity_and_score_by_the_items_mean_label(data_dir) -> None:
    dm = InteractionDataModule(MovieLens("100k"), split="random", target="binary", ranking=True, data_dir=str(data_dir))
    found, why = baselines(dm, "val")
    assert why is None and set(found) == {"popularity", "item mean label"}
    label = pointwise_rows(dm, "val")["label"]
    rate = float(label.mean())
    constant = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))  # logloss of always predicting the rate
    mean_label = found["item mean label"]
    assert 0.65 < mean_label["auc"] < 0.85 and mean_label["logloss"] < constant
    assert 0.5 < found["popularity"]["auc"] < mean_label["auc"]  # liked items are popular, but less than mean label says
    assert 0 < found["popularity"]["ndcg_10"] <= found["popularity"]["hr_10"] <= 1  # ranked: data.ranking is on
    unranked, _ = baselines(InteractionDataModule(MovieLens("100k"), split="random", target="binary", data_dir=str(data_dir)))
    assert set(unranked["popularity"]) == {"auc"}  # the model is not ranked either: nothing to set beside it


def test_a_data_module_without_training_rows_gets_a_reason_instead() -> None:
    found, why = baselines(object(), "val")
    assert found == {} and "keeps no training rows" in why
