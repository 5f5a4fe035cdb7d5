"""Baselines measured with a data module's own evaluation protocol, in seconds.

Each figure is taken on exactly what the model's ``val_*`` (or ``test_*``) metrics see: the
same rows, the same seeded negatives, the same full-ranking users with the same masks of
seen items, so a baseline and the model compare. Model cards put them beside the
registered model's validation metrics; ``benchmarks/quality.py`` uses the same pieces on
the test split.

- **popularity** (binary task): items scored by their number of training positives;
  pointwise AUC, and HR/NDCG/Recall@K over the catalogue where the data module ranks.
- **item mean label** (binary target): the item's training mean label, shrunk toward the
  global mean by :data:`SHRINKAGE` pseudo-rows; AUC and logloss.
- **global mean** and **user + item biases** (rating target): RMSE and MAE; the biases are
  ridge-regularised, their strength picked on the evaluated split itself (which flatters
  the baseline, never the model).

Only :class:`~wdrec.data.datamodule.InteractionDataModule` holds its training rows; a
streaming data module gets no baselines (:func:`baselines` says why). The loaders are the
data module's own, so under DDP a process measures its own shard of the split (the model's
metrics are reduced over all shards).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

from wdrec.data.datamodule import InteractionDataModule
from wdrec.training.metrics import TopKRanking

SHRINKAGE = 10.0  # pseudo-rows at the global mean behind each item's mean label
BIAS_STRENGTHS = (1.0, 5.0, 10.0, 25.0)  # ridge strengths tried for the user + item biases


def ranking_metrics(
    datamodule: InteractionDataModule, stage: str, score_block: Callable[[Tensor], Tensor], k: int = 10
) -> dict[str, float]:
    """Full-ranking HR/NDCG/Recall@K with the data module's own users and masks;
    ``score_block(user rows) -> (U, N)`` scores a block of users against the catalogue."""
    metric = TopKRanking(k)
    loader = (datamodule.test_dataloader() if stage == "test" else datamodule.val_dataloader())[1]
    for batch in loader:
        users = batch["ranking_user"]
        relevant = torch.zeros((len(users), datamodule.num_items), dtype=torch.bool)
        exclude = torch.zeros_like(relevant)
        relevant[torch.searchsorted(users, batch["relevant_user"]), batch["relevant_item"]] = True
        exclude[torch.searchsorted(users, batch["exclude_user"]), batch["exclude_item"]] = True
        metric.update(score_block(users), relevant, exclude)
    return {f"{name}_{k}": float(value) for name, value in metric.compute().items()}


def pointwise_rows(datamodule: InteractionDataModule, stage: str) -> dict[str, Tensor]:
    """The (user, item, label) rows the model's pointwise metrics of ``stage`` see, negatives included."""
    loader = (datamodule.test_dataloader() if stage == "test" else datamodule.val_dataloader())[0]
    batches = list(loader)
    return {key: torch.cat([b[key] for b in batches]) for key in ("user", "item", "label")}


def item_popularity(datamodule: InteractionDataModule) -> Tensor:
    """(N,) float: each catalogue item's number of training positives."""
    items = datamodule.train_positives()[1]
    return torch.bincount(items, minlength=datamodule.num_items).float()


@dataclass
class Biases:
    """Rating = mean + user bias + item bias (rows of the data module's entity tables)."""

    mean: float
    user: np.ndarray
    item: np.ndarray

    @classmethod
    def fit(cls, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int, n_items: int, strength: float) -> Biases:
        """Ridge biases by alternating closed-form updates (ten rounds)."""
        mean, user, item = float(ratings.mean()), np.zeros(n_users), np.zeros(n_items)
        for _ in range(10):
            user = np.bincount(users, ratings - mean - item[items], n_users) / (np.bincount(users, minlength=n_users) + strength)
            item = np.bincount(items, ratings - mean - user[users], n_items) / (np.bincount(items, minlength=n_items) + strength)
        return cls(mean, user, item)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mean + self.user[users] + self.item[items]


def errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    error = predicted - actual
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


def baselines(datamodule: object, stage: str = "val") -> tuple[dict[str, dict[str, float]], str | None]:
    """``({baseline: {metric: value}}, None)``, metric names as the model's without the stage
    prefix (``auc``, ``ndcg_10``, ``rmse``...); ``({}, why)`` when none can be measured."""
    if not isinstance(datamodule, InteractionDataModule):
        return {}, f"{type(datamodule).__name__} keeps no training rows in memory to fit baselines on"
    rows = pointwise_rows(datamodule, stage)
    if len(rows["label"]) == 0:
        return {}, f"the {stage} split is empty"
    label = rows["label"]
    if datamodule.target == "rating":
        train = datamodule.rows["train"]
        users, items, ratings = (train[key].numpy() for key in ("user", "item", "label"))
        sizes = len(datamodule.users_frame), datamodule.num_items
        fits = [Biases.fit(users, items, ratings, *sizes, strength) for strength in BIAS_STRENGTHS]
        evaluated = [errors(fit.predict(rows["user"].numpy(), rows["item"].numpy()), label.numpy()) for fit in fits]
        return {
            "global mean": errors(np.full(len(label), ratings.mean()), label.numpy()),
            "user + item biases": min(evaluated, key=lambda e: e["rmse"]),
        }, None
    counts = item_popularity(datamodule)
    popularity = {"auc": float(binary_auroc(counts[rows["item"]] / counts.max().clamp(min=1), label.long()))}
    if datamodule.full_ranking:
        popularity |= ranking_metrics(datamodule, stage, lambda users: counts.expand(len(users), -1))
    found = {"popularity": popularity}
    if datamodule.target == "binary":
        train = datamodule.rows["train"]
        overall = float(train["label"].mean())
        sums = torch.bincount(train["item"], train["label"].double(), datamodule.num_items)
        seen = torch.bincount(train["item"], minlength=datamodule.num_items)
        probability = ((sums + SHRINKAGE * overall) / (seen + SHRINKAGE)).float()[rows["item"]]
        found["item mean label"] = {
            "auc": float(binary_auroc(probability, label.long())),
            "logloss": float(F.binary_cross_entropy(probability.clamp(1e-7, 1 - 1e-7), label.float())),
        }
    return found, None
