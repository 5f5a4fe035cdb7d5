"""FeatureDataModule: what every wdrec data module does, whatever the source of its rows.

A data module reads interactions once (on first use: ``layout``, ``setup`` or a loader) and
then serves batches. The subclass is the row source: it reads the entity tables and knows
which rows make a batch (:class:`~wdrec.data.datamodule.InteractionDataModule`: index
tensors of an in-memory split, with their timeline; :class:`~wdrec.data.streaming.StreamingDataModule`:
Parquet streamed row group by row group). This base owns the rest:

- the entity tables ``users_frame`` and ``items_frame``, which a bundle stores (users with
  ``history`` and ``seen``; the catalogue);
- the FeatureSpec, fitted on the training rows the source names (or a saved one);
- both tables encoded once, plus one all-unknown row after the last for ids outside them;
- per-device copies of the tables and the feature batch (``on_after_batch_transfer``);
- the shard of this process, per-device batch sizes, loaders, and the data summary.

A subclass implements ``_read`` (calling ``_use_entities`` once the tables are read; it
sets ``sampler``, and ``timeline`` when rows carry a point in time), ``summary`` and its
loaders, which yield index batches (:mod:`wdrec.data.batches`).
"""

from __future__ import annotations

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader, IterableDataset

from wdrec.data.batches import Batch, PointwiseBatches, TrainingPlan, ranking_features, row_features
from wdrec.data.entities import with_unknown_row
from wdrec.data.features import Cross, FeatureSpec, Field, SideTensors
from wdrec.data.sampling import NegativeSampler
from wdrec.data.schema import ITEM_ID, USER_ID
from wdrec.data.splits import Target
from wdrec.data.timeline import Timeline


class FeatureDataModule(L.LightningDataModule):
    """Entities, FeatureSpec, encoded tables and feature batches over a subclass's rows.

    Args:
        features, crosses: the features to build (:class:`~wdrec.data.features.Field`,
            :class:`~wdrec.data.features.Cross`); by default just ``user_id`` and ``item_id``.
        target: ``implicit`` (negatives sampled), ``binary`` or ``rating``.
        negatives: sampled negatives per positive (implicit target only).
        batch_size, eval_batch_size: examples per training / evaluation batch across all devices.
        seed: drives shuffling and negative sampling.
    """

    feature_spec: FeatureSpec
    users_frame: pd.DataFrame
    items_frame: pd.DataFrame
    user_tensors: SideTensors  # one row per user of users_frame, then the unknown row
    item_tensors: SideTensors
    sampler: NegativeSampler
    can_rank = True  # whether it can rank the whole catalogue at evaluation (it needs every user's seen items)
    full_ranking = False  # whether evaluation does (selection_for reads it)

    @classmethod
    def ranks_catalogue(cls, target: str, ranking: bool | None) -> bool:
        """Whether evaluation ranks the whole catalogue: when asked (``ranking``), and by default for
        implicit feedback, where NDCG@10 selects the model. A PW or rating job selects on AUC or
        RMSE; ranking every user against every item took 70% of the PW job's time."""
        return cls.can_rank and (target == "implicit" if ranking is None else ranking)

    def __init__(
        self,
        features: list[Field] | None,
        crosses: list[Cross] | None,
        target: Target,
        negatives: int,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.fields = features or [Field("user_id", "user"), Field("item_id", "item")]
        self.crosses = crosses or []
        self.target = target
        self.negatives = negatives if target == "implicit" else 0
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.timeline: Timeline | None = None  # rows without a point in time have no history
        self._built = False
        self._device_tables: dict[str, tuple[SideTensors, SideTensors, Timeline | None]] = {}

    # ------------------------------------------------------------ build once
    def setup(self, stage: str | None = None) -> None:
        self._build()

    def _build(self) -> None:
        if not self._built:
            self._read()
            self._built = True

    def _read(self) -> None:
        """Read the source (or plan how to stream it); call ``_use_entities``; set ``sampler``."""
        raise NotImplementedError

    def _use_entities(
        self, users: pd.DataFrame, items: pd.DataFrame, train: pd.DataFrame | None = None, spec: FeatureSpec | None = None
    ) -> None:
        """Keep the entity tables, fit the FeatureSpec on ``train`` (or use ``spec``) and encode both tables."""
        self.users_frame, self.items_frame = users, items
        self.feature_spec = spec if spec is not None else FeatureSpec.fit(self.fields, self.crosses, train, users, items)
        self._user_row, self._item_row = pd.Index(users[USER_ID]), pd.Index(items[ITEM_ID])
        self.user_tensors = with_unknown_row(self.feature_spec.encode("user", users))
        self.item_tensors = with_unknown_row(self.feature_spec.encode("item", items))

    def summary(self) -> dict[str, object]:
        """Counts a person checks first (``data_summary.json`` of the MLflow run)."""
        raise NotImplementedError

    # ------------------------------------------------------ what the model needs
    @property
    def layout(self) -> dict:
        """Field layout and vocabulary sizes, linked into the model by the CLI."""
        self._build()
        return self.feature_spec.layout()

    @property
    def task(self) -> str:
        return "regression" if self.target == "rating" else "binary"

    @property
    def output_bias(self) -> float:
        """Where the network's output starts (linked into the model by the CLI): 0."""
        return 0.0

    @property
    def num_items(self) -> int:
        self._build()
        return len(self.items_frame)

    # ------------------------------------------------------------ loaders
    def _shard(self) -> tuple[int, int]:
        """(rank, world size) of this process: the data it reads is its shard."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _per_device(self, size: int) -> int:
        return max(1, size // self._shard()[1])

    def _epoch(self) -> int:
        """The trainer's current epoch (0 without one): it reseeds shuffling and negatives."""
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _training_plan(self) -> TrainingPlan:
        """This process's training batches: its shard, its share of ``batch_size``, the negatives."""
        batch_size = self._per_device(self.batch_size)
        return TrainingPlan(self.sampler, self.negatives, batch_size, self.seed, self._epoch, *self._shard())

    def _loader(self, dataset: IterableDataset, num_workers: int = 0) -> DataLoader:
        return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=torch.cuda.is_available())

    def _pointwise_loader(self, rows: Batch) -> DataLoader:
        """Fixed rows, this process's shard of them, in evaluation batches."""
        return self._loader(PointwiseBatches(rows, self._per_device(self.eval_batch_size), *self._shard()))

    # ------------------------------------------------- features on the device
    def tables_on(self, device: torch.device) -> tuple[SideTensors, SideTensors, Timeline | None]:
        key = str(device)
        if key not in self._device_tables:
            timeline = self.timeline.to(device) if self.timeline is not None else None
            self._device_tables[key] = (self.user_tensors.to(device), self.item_tensors.to(device), timeline)
        return self._device_tables[key]

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        """An index batch, tensor by tensor: Lightning's generic walk over any collection costs
        more per step than the copies themselves (a no-op on CPU)."""
        return {key: value.to(device, non_blocking=True) for key, value in batch.items()}

    def catalogue_on(self, device: torch.device) -> SideTensors:
        """The items that ranking scores every user against (the unknown row left out), on ``device``."""
        items = self.tables_on(device)[1]
        return items.take(torch.arange(self.num_items, device=device))

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Index batch → feature batch, on the batch's device."""
        users, items, timeline = self.tables_on(next(iter(batch.values())).device)
        if "ranking_user" in batch:
            return ranking_features(self.feature_spec, batch, users, timeline, self.num_items)
        return row_features(self.feature_spec, batch, users, items, timeline)
