"""InteractionDataModule: an interaction log held in memory → Wide&Deep feature batches.

Pipeline (once per process, on first use): source → canonical tables → labels and
splits → entity tables → FeatureSpec fitted on train → both tables encoded
(:class:`~wdrec.data.module.FeatureDataModule`). The rows of each split are then index
tensors (user rows, item rows, labels, and where each row's history lies in the
:class:`~wdrec.data.timeline.Timeline`), sliced into batches by
:mod:`wdrec.data.batches`; features are assembled on the batch's device.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from wdrec.data.batches import RankingBatches, ResidentBatches, TrainBatches, with_negatives
from wdrec.data.entities import build_items_frame, build_users_frame, with_training_statistics
from wdrec.data.features import Cross, Field
from wdrec.data.module import FeatureDataModule
from wdrec.data.sampling import Distribution, UnseenItemSampler
from wdrec.data.schema import ITEM_ID, LABEL, USER_ID
from wdrec.data.sources.base import InteractionSource, default_data_dir
from wdrec.data.splits import SplitName, Target, TieBreak, make_splits, resolve_split
from wdrec.data.timeline import Timeline

VIEW_OF = {"train": "train", "val": "train", "test": "test"}  # whose history each split's rows look back on


class InteractionDataModule(FeatureDataModule):
    """Interaction logs → Wide&Deep feature batches.

    Args:
        source: where the interactions come from (MovieLens, Files, Synthetic).
        features: the features to build, see :class:`~wdrec.data.features.Field`; by
            default just ``user_id`` and ``item_id``.
        crosses: cross-products for the wide part.
        split: ``l1o``, ``random``, ``temporal`` or ``predefined``. Default: ``predefined`` for a
            source with its own train/val/test files (any other split is then refused), else ``l1o``.
        target: ``implicit`` (negatives sampled), ``binary`` or ``rating``.
        negatives: sampled negatives per positive (implicit target only); fresh each epoch.
        negative_sampling: ``uniform`` over the catalogue or by ``popularity``.
        positive_threshold, negative_threshold: binary target from ratings: >= positive → 1,
            <= negative → 0, in between dropped.
        split_fractions: train/val/test fractions for ``random`` and ``temporal``.
        tie_break: how ``l1o`` and ``temporal`` order interactions in the same second:
            ``random`` (seeded by ``seed``), ``log_order`` or ``item_id`` (see ``wdrec.data.splits``).
        batch_size: examples per optimizer step across all devices, negatives included.
        eval_batch_size: examples per evaluation batch across all devices.
        ranking: rank the whole catalogue at validation and test (HR, NDCG and Recall@K).
            Default: for the implicit target only, where NDCG@10 selects the model; a binary job
            computes them when set true (a rating job is evaluated pointwise).
        ranking_users: users per full-ranking batch (each scored against the whole catalogue).
        ranking_max_users: rank at most this many users (a seeded sample) per evaluation;
            ``None`` ranks everyone. Full ranking over items is never sampled.
        data_dir: cache for downloads; ``$WDREC_DATA_DIR`` or ``~/.cache/wdrec`` by default.
        seed: drives the random split, shuffling and negative sampling.
        resident: keep the training rows, the encoded tables and the timeline on the training
            device and build every training batch there (:class:`~wdrec.data.batches.ResidentBatches`:
            no host work per step, one batch shape, the epoch's last partial batch left out).
            Default: on when the trainer trains on CUDA, where host-side batches kept the GPU
            idle most of the time (docs/benchmarks.md).
    """

    sampler: UnseenItemSampler  # every interaction at hand; its tables can move to the device

    def __init__(
        self,
        source: InteractionSource,
        features: list[Field] | None = None,
        crosses: list[Cross] | None = None,
        split: SplitName | None = None,
        target: Target = "implicit",
        negatives: int = 4,
        negative_sampling: Distribution = "uniform",
        positive_threshold: float = 4.0,
        negative_threshold: float = 2.0,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        tie_break: TieBreak = "random",
        batch_size: int = 1024,
        eval_batch_size: int = 16384,
        ranking: bool | None = None,
        ranking_users: int = 32,
        ranking_max_users: int | None = None,
        data_dir: str | None = None,
        seed: int = 42,
        resident: bool | None = None,
    ) -> None:
        super().__init__(features, crosses, target, negatives, batch_size, eval_batch_size, seed)
        split = resolve_split(split, source.carries_split, source.name)
        self.save_hyperparameters(ignore=["source"])  # the source is logged with the resolved config
        self.save_hyperparameters({"split": split})  # the CLI saves the config's values: log the split used
        if negatives < 0 or batch_size < 1 or eval_batch_size < 1 or ranking_users < 1:
            raise ValueError(
                f"negatives must be >= 0 and batch sizes >= 1; got negatives={negatives}, batch_size={batch_size}, "
                f"eval_batch_size={eval_batch_size}, ranking_users={ranking_users}"
            )
        self.source = source
        self.split = split
        self.negative_sampling = negative_sampling
        self.thresholds = (positive_threshold, negative_threshold)
        self.split_fractions = tuple(split_fractions)
        self.tie_break = tie_break
        if target == "implicit" and (means := [f.name for f in self.fields if f.statistic == "label_mean"]):
            raise ValueError(f"feature {means[0]!r}: statistic label_mean needs the binary or rating target; with "
                             "implicit feedback every training row is a positive (count still tells how many)")  # fmt: skip
        if ranking and target == "rating":
            raise ValueError("ranking: the rating target is evaluated pointwise (RMSE, MAE); "
                             "ranking the catalogue needs the implicit or binary target")  # fmt: skip
        self.full_ranking = self.ranks_catalogue(target, ranking)
        self.ranking_users, self.ranking_max_users = ranking_users, ranking_max_users
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.resident = resident

    # ------------------------------------------------------------ build once
    def prepare_data(self) -> None:
        self.source.prepare(self.data_dir)

    def _read(self) -> None:
        data = self.source.load(self.data_dir)
        self.data = data
        self.splits = make_splits(
            data, self.split, self.target, self.split_fractions, self.seed, *self.thresholds, self.tie_break
        )
        if self.splits.train.empty:
            raise ValueError(f"{self.source.name}: the training split is empty")
        positives = self._train_positives(self.splits.train)
        train = self.splits.train
        users = with_training_statistics(build_users_frame(data, positives), "user", self.fields, train)
        items = with_training_statistics(build_items_frame(data), "item", self.fields, train)
        self._use_entities(users, items, train=train)
        # Test rows may also look back on the validation interactions, which come before them.
        views = {"train": [positives], "test": [positives, self._train_positives(self.splits.val)]}
        self.timeline = Timeline(views, self._user_row, self.feature_spec)
        self.rows = {name: self._rows(frame, VIEW_OF[name], at_its_time=name == "train") for name, frame in self.splits.items()}
        users, items = self.train_positives()
        self.sampler = UnseenItemSampler(users, items, len(self.items_frame), self.negative_sampling)

    def summary(self) -> dict[str, object]:
        self._build()
        return self.data.summary()

    def train_positives(self) -> tuple[Tensor, Tensor]:
        """(user row, item row) of every training positive: what negatives must never be."""
        train = self.rows["train"]
        if self.target != "binary":
            return train["user"], train["item"]
        positive = train["label"] > 0.5
        return train["user"][positive], train["item"][positive]

    def _train_positives(self, train: pd.DataFrame) -> pd.DataFrame:
        return train if self.target != "binary" else train[train[LABEL] > 0.5]

    def _rows(self, frame: pd.DataFrame, view: str, at_its_time: bool = False) -> dict[str, Tensor]:
        """Index tensors of a split; ``start`` and ``position`` bound each row's history in
        the timeline: up to the row's own time for training rows, everything before
        evaluation rows (for test rows, the validation interactions included)."""
        users = self._user_row.get_indexer(frame[USER_ID]).astype(np.int64)
        start, position = self.timeline.bounds(view, users, frame if at_its_time else None)
        return {
            "user": torch.from_numpy(users),
            "item": torch.from_numpy(self._item_row.get_indexer(frame[ITEM_ID]).astype(np.int64)),
            "label": torch.tensor(frame[LABEL].to_numpy(dtype=np.float32)),
            "start": torch.from_numpy(start),
            "position": torch.from_numpy(position),
        }

    @property
    def output_bias(self) -> float:
        """The mean training rating for the rating target (the regression head starts at the
        global-mean baseline instead of 0, some 3.5 stars away); 0 for the binary targets."""
        if self.target != "rating":
            return 0.0
        self._build()
        return float(self.rows["train"]["label"].mean())

    # ------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader | ResidentBatches:
        self._build()
        device = self._device()
        if self.resident if self.resident is not None else device.type == "cuda":
            rows = {key: values.to(device) for key, values in self.rows["train"].items()}
            plan = replace(self._training_plan(), sampler=self.sampler.to(device))
            return ResidentBatches(rows, plan)
        return self._loader(TrainBatches(self.rows["train"], self._training_plan()))

    def _device(self) -> torch.device:
        """Where the trainer trains (the CPU without a trainer)."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> DataLoader:
        self._build()
        return self._pointwise_loader(self._pointwise("test"))

    def _eval_loaders(self, stage: str) -> list[DataLoader]:
        """A pointwise loader (loss, AUC) and, when evaluation ranks the catalogue, a full-ranking loader."""
        self._build()
        loaders = [self._pointwise_loader(self._pointwise(stage))]
        if self.full_ranking:
            loaders.append(self._loader(self._ranking(stage)))
        return loaders

    def _pointwise(self, stage: str) -> dict[str, Tensor]:
        """The split's rows; implicit: a fixed, seeded set of negatives after them, round by round."""
        rows = self.rows[stage]
        if not self.negatives:
            return rows
        generator = torch.Generator().manual_seed(self.seed + {"val": 1, "test": 2}[stage])
        k = self.negatives
        drawn = self._eval_sampler().draw(rows["user"].repeat(k), rows["item"].repeat(k), 1, generator)
        return with_negatives(rows, drawn.view(k, -1), by_round=True)

    def _eval_sampler(self) -> UnseenItemSampler:
        """Evaluation negatives avoid all of a user's interactions: a val or test item is never a 0."""
        known = {k: torch.cat([rows[k] for rows in self.rows.values()]) for k in ("user", "item")}
        return UnseenItemSampler(known["user"], known["item"], len(self.items_frame), self.negative_sampling)

    def _ranking(self, stage: str) -> RankingBatches:
        relevant = self.rows[stage]
        relevant = {k: v[relevant["label"] > 0.5] for k, v in relevant.items()}
        seen = [self.rows["train"]] + ([self.rows["val"]] if stage == "test" else [])
        exclude = {k: torch.cat([r[k] for r in seen]) for k in ("user", "item")}
        users = torch.unique(relevant["user"])
        if self.ranking_max_users is not None and len(users) > self.ranking_max_users:
            generator = torch.Generator().manual_seed(self.seed + 3)
            users = users[torch.randperm(len(users), generator=generator)[: self.ranking_max_users]].sort().values
        bounds = {k: torch.from_numpy(v) for k, v in zip(("start", "position"), self.timeline.bounds(VIEW_OF[stage], users.numpy()), strict=True)}
        return RankingBatches(users, bounds, relevant, exclude, self.ranking_users, *self._shard())
