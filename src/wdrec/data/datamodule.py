"""The LightningDataModule: interaction logs in, ready feature batches out.

Pipeline (once per process, on first use): source → canonical tables → labels and
splits → FeatureSpec fitted on train → users and catalogue encoded once as tensors.
A batch is then a few index tensors (user rows, item rows, labels); the features are
gathered and crossed by :meth:`FeatureSpec.assemble` after the batch reaches its device
(``on_after_batch_transfer``), so a GPU receives indices, not feature matrices.

Batches come from shuffled index tensors sliced into blocks, not from per-row
``__getitem__``. Each rank takes its own shard (``perm[rank::world_size]``) and every
rank yields the same number of batches, so under DDP no sample is dropped or repeated
and no rank waits on another.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from wdrec.data.features import HISTORY_COLUMN, Cross, FeatureSpec, Field, SideTensors
from wdrec.data.io import arrow_column
from wdrec.data.sampling import Distribution, NegativeSampler
from wdrec.data.schema import ITEM_ID, LABEL, TIMESTAMP, USER_ID, InteractionData
from wdrec.data.sources.base import InteractionSource, default_data_dir
from wdrec.data.splits import SplitName, Target, make_splits, resolve_split

SEEN_COLUMN = "seen"
NEGATIVE_DRAW = 1 << 20  # training negatives drawn at once (see TrainBatches)
VIEW_OF = {"train": "train", "val": "train", "test": "test"}  # whose history each split's rows look back on
Batch = dict[str, Tensor]


class FeatureDataModule(L.LightningDataModule):
    """What every wdrec data module tells the model and the trainer: sizes, task, shard.

    Subclasses set ``feature_spec``, ``items_frame`` and ``target`` in ``_build``.
    """

    feature_spec: FeatureSpec
    items_frame: pd.DataFrame
    target: Target

    def _build(self) -> None:
        raise NotImplementedError

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

    def _shard(self) -> tuple[int, int]:
        """(rank, world size) of this process: the data it reads is its shard."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


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
        batch_size: examples per optimizer step across all devices, negatives included.
        eval_batch_size: examples per evaluation batch across all devices.
        ranking_users: users per full-ranking batch (each scored against the whole catalogue).
        ranking_max_users: rank at most this many users (a seeded sample) per evaluation;
            ``None`` ranks everyone. Full ranking over items is never sampled.
        data_dir: cache for downloads; ``$WDREC_DATA_DIR`` or ``~/.cache/wdrec`` by default.
        seed: drives the random split, shuffling and negative sampling.
    """

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
        batch_size: int = 1024,
        eval_batch_size: int = 16384,
        ranking_users: int = 32,
        ranking_max_users: int | None = None,
        data_dir: str | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        split = resolve_split(split, source.carries_split, source.name)
        self.save_hyperparameters(ignore=["source"])  # the source is logged with the resolved config
        self.save_hyperparameters({"split": split})  # the CLI saves the config's values: log the split used
        if negatives < 0 or batch_size < 1 or eval_batch_size < 1 or ranking_users < 1:
            raise ValueError(
                f"negatives must be >= 0 and batch sizes >= 1; got negatives={negatives}, batch_size={batch_size}, "
                f"eval_batch_size={eval_batch_size}, ranking_users={ranking_users}"
            )
        self.source = source
        self.fields = features or [Field("user_id", "user"), Field("item_id", "item")]
        self.crosses = crosses or []
        self.split, self.target = split, target
        self.negatives = negatives if target == "implicit" else 0
        self.negative_sampling = negative_sampling
        self.thresholds = (positive_threshold, negative_threshold)
        self.split_fractions = tuple(split_fractions)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.ranking_users, self.ranking_max_users = ranking_users, ranking_max_users
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.seed = seed
        self._built = False
        self._device_tables: dict[str, tuple[SideTensors, SideTensors]] = {}

    # ------------------------------------------------------------ build once
    def prepare_data(self) -> None:
        self.source.prepare(self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        self._build()

    def _build(self) -> None:
        if self._built:
            return
        data = self.source.load(self.data_dir)
        self.data = data
        self.splits = make_splits(
            data, self.split, self.target, self.split_fractions, self.seed, *self.thresholds
        )
        if self.splits.train.empty:
            raise ValueError(f"{self.source.name}: the training split is empty")
        positives = self._train_positives(self.splits.train)
        self.users_frame = build_users_frame(data, positives)
        self.items_frame = build_items_frame(data)
        self.feature_spec = FeatureSpec.fit(
            self.fields, self.crosses, self.splits.train, self.users_frame, self.items_frame
        )
        self.user_tensors = self.feature_spec.encode("user", self.users_frame)
        self.item_tensors = self.feature_spec.encode("item", self.items_frame)
        self._user_row = pd.Index(self.users_frame[USER_ID])
        self._item_row = pd.Index(self.items_frame[ITEM_ID])
        # Test rows may also look back on the validation interactions, which come before them.
        views = {"train": [positives], "test": [positives, self._train_positives(self.splits.val)]}
        self.timeline = Timeline(views, self._user_row, self.feature_spec)
        self.rows = {name: self._rows(frame, VIEW_OF[name], at_its_time=name == "train") for name, frame in self.splits.items()}
        users, items = self.train_positives()
        self.sampler = NegativeSampler(users, items, len(self.items_frame), self.negative_sampling)
        self._built = True

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
    def _per_device(self, size: int) -> int:
        return max(1, size // self._shard()[1])

    def _loader(self, dataset: IterableDataset) -> DataLoader:
        return DataLoader(dataset, batch_size=None, num_workers=0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        self._build()
        epoch = (lambda: self.trainer.current_epoch) if self.trainer is not None else (lambda: 0)
        return self._loader(
            TrainBatches(self.rows["train"], self.sampler, self.negatives, self._per_device(self.batch_size),
                         self.seed, epoch, *self._shard())  # fmt: skip
        )

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> DataLoader:
        self._build()
        return self._loader(self._pointwise("test"))

    def _eval_loaders(self, stage: str) -> list[DataLoader]:
        """A pointwise loader (loss, AUC) and, for ranking targets, a full-ranking loader."""
        self._build()
        loaders = [self._loader(self._pointwise(stage))]
        if self.task == "binary":
            loaders.append(self._loader(self._ranking(stage)))
        return loaders

    def _pointwise(self, stage: str) -> PointwiseBatches:
        rows = self.rows[stage]
        if self.negatives:  # implicit: a fixed, seeded set of negatives beside each positive
            generator = torch.Generator().manual_seed(self.seed + {"val": 1, "test": 2}[stage])
            users, items = self._eval_sampler().sample(rows["user"].repeat(self.negatives), generator)
            rows = {
                "user": torch.cat([rows["user"], users]),
                "item": torch.cat([rows["item"], items]),
                "label": torch.cat([rows["label"], torch.zeros(len(users))]),
                **{k: torch.cat([rows[k], torch.from_numpy(v)]) for k, v in
                   zip(("start", "position"), self.timeline.bounds(VIEW_OF[stage], users.numpy()), strict=True)},
            }  # fmt: skip
        return PointwiseBatches(rows, self._per_device(self.eval_batch_size), *self._shard())

    def _eval_sampler(self) -> NegativeSampler:
        """Evaluation negatives avoid all of a user's interactions: a val or test item is never a 0."""
        known = {k: torch.cat([rows[k] for rows in self.rows.values()]) for k in ("user", "item")}
        return NegativeSampler(known["user"], known["item"], len(self.items_frame), self.negative_sampling)

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

    # ------------------------------------------------- features on the device
    def tables_on(self, device: torch.device) -> tuple[SideTensors, SideTensors, Timeline]:
        key = str(device)
        if key not in self._device_tables:
            self._device_tables[key] = (self.user_tensors.to(device), self.item_tensors.to(device), self.timeline.to(device))
        return self._device_tables[key]

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Index batch → feature batch, on the batch's device."""
        users, items, timeline = self.tables_on(next(iter(batch.values())).device)
        if "ranking_user" in batch:
            return self._ranking_features(batch, users, items, timeline)
        history = timeline.window(batch["start"], batch["position"], self.feature_spec.history_length)
        features = self.feature_spec.assemble(users.take(batch["user"]), items.take(batch["item"]), history)
        return {**features, **batch}

    def _ranking_features(self, batch: Batch, users: SideTensors, items: SideTensors, timeline: Timeline) -> Batch:
        block, n_items = batch["ranking_user"], len(items)
        device = block.device
        user_rows = block.repeat_interleave(n_items)
        item_rows = torch.arange(n_items, device=device).repeat(len(block))
        history = timeline.window(batch["ranking_start"].repeat_interleave(n_items),
                                  batch["ranking_position"].repeat_interleave(n_items), self.feature_spec.history_length)  # fmt: skip
        features = self.feature_spec.assemble(users.take(user_rows), items.take(item_rows), history)

        def mask(pairs_user: Tensor, pairs_item: Tensor) -> Tensor:
            out = torch.zeros((len(block), n_items), dtype=torch.bool, device=device)
            out[torch.searchsorted(block, pairs_user), pairs_item] = True
            return out

        return {
            **features,
            "relevant": mask(batch["relevant_user"], batch["relevant_item"]),
            "exclude": mask(batch["exclude_user"], batch["exclude_item"]),
        }


# ------------------------------------------------------------------- datasets
def _even_chunks(index: Tensor, rank: int, world_size: int, per_batch: int) -> list[Tensor]:
    """This rank's share of ``index``, cut into as many batches as every other rank gets."""
    shard = index[rank::world_size].contiguous()
    n_batches = max(1, math.ceil(math.ceil(len(index) / world_size) / per_batch))
    return list(torch.tensor_split(shard, n_batches))


class TrainBatches(IterableDataset):
    """Positives shuffled per epoch, each batch topped up with fresh sampled negatives."""

    def __init__(
        self,
        rows: dict[str, Tensor],
        sampler: NegativeSampler,
        negatives: int,
        batch_size: int,
        seed: int,
        epoch: Callable[[], int],
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.rows, self.sampler, self.negatives = rows, sampler, negatives
        self.positives_per_batch = max(1, batch_size // (1 + negatives))
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size

    def __len__(self) -> int:
        return max(1, math.ceil(math.ceil(len(self.rows["label"]) / self.world_size) / self.positives_per_batch))

    def __iter__(self) -> Iterator[Batch]:
        # The same permutation on every rank (seeded by epoch), then disjoint shards.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch())
        order = torch.randperm(len(self.rows["label"]), generator=generator)
        chunks = _even_chunks(order, self.rank, self.world_size, self.positives_per_batch)
        sampling = torch.Generator().manual_seed(generator.initial_seed() * 31 + self.rank)
        # Negatives in one vectorised draw per group of batches, about NEGATIVE_DRAW of them:
        # per batch, the draw's fixed costs add up; per epoch, 10M positives' negatives and the
        # draw's temporaries took 1 GB.
        group = max(1, NEGATIVE_DRAW // (self.positives_per_batch * max(1, self.negatives)))
        for first in range(0, len(chunks), group):
            chunks_of_draw = chunks[first : first + group]
            if self.negatives:  # (positives, negatives)
                owners = self.rows["user"][torch.cat(chunks_of_draw)].repeat_interleave(self.negatives)
                negatives = self.sampler.draw(owners, sampling).view(-1, self.negatives)
            start = 0
            for chunk in chunks_of_draw:
                batch = {key: values[chunk] for key, values in self.rows.items()}
                if self.negatives:  # a negative shares its positive's user and point in time
                    drawn = negatives[start : start + len(chunk)].flatten()
                    kept = drawn >= 0
                    batch = {key: torch.cat([values, values.repeat_interleave(self.negatives)[kept]]) for key, values in batch.items()}
                    batch["item"][len(chunk) :] = drawn[kept]
                    batch["label"][len(chunk) :] = 0.0
                    start += len(chunk)
                yield batch


class PointwiseBatches(IterableDataset):
    """Fixed rows in order, sharded by rank: evaluation and prediction."""

    def __init__(self, rows: dict[str, Tensor], batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.rows, self.batch_size, self.rank, self.world_size = rows, batch_size, rank, world_size

    def _chunks(self) -> list[Tensor]:
        return _even_chunks(torch.arange(len(self.rows["label"])), self.rank, self.world_size, self.batch_size)

    def __len__(self) -> int:
        return len(self._chunks())

    def __iter__(self) -> Iterator[Batch]:
        for chunk in self._chunks():
            yield {key: values[chunk] for key, values in self.rows.items()}


class RankingBatches(IterableDataset):
    """Blocks of users, each to be scored against the whole catalogue.

    A batch carries the block's user rows plus its (user, item) pairs of relevant and of
    excluded items; the dense masks are built on the device.
    """

    def __init__(
        self,
        users: Tensor,
        bounds: dict[str, Tensor],
        relevant: dict[str, Tensor],
        exclude: dict[str, Tensor],
        users_per_batch: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.users, self.bounds, self.relevant, self.exclude = users, bounds, relevant, exclude
        self.users_per_batch, self.rank, self.world_size = users_per_batch, rank, world_size

    def _blocks(self) -> list[Tensor]:
        return _even_chunks(self.users, self.rank, self.world_size, self.users_per_batch)

    def __len__(self) -> int:
        return len(self._blocks())

    def __iter__(self) -> Iterator[Batch]:
        for block in self._blocks():
            where = torch.searchsorted(self.users, block)
            batch = {"ranking_user": block, **{f"ranking_{k}": v[where] for k, v in self.bounds.items()}}
            for name, pairs in (("relevant", self.relevant), ("exclude", self.exclude)):
                inside = torch.isin(pairs["user"], block)
                batch[f"{name}_user"], batch[f"{name}_item"] = pairs["user"][inside], pairs["item"][inside]
            yield batch


# ---------------------------------------------------------------- entity tables
class Timeline:
    """Each user's positives, oldest first, as flat item sequences, one per view.

    View ``train`` holds the training positives: the users' stored ``history`` lists are
    cut from it, and a training row's history is the slice that ends at the row's own
    time, so the model learns from what the user had done *before* each interaction (no
    label leaks through the history, and the end of a user's sequence is exactly what
    serving sees). View ``test`` adds the validation positives, which precede the test
    interactions, as the latest interactions precede a request in production.
    """

    def __init__(self, views: dict[str, list[pd.DataFrame]], user_row: pd.Index, spec: FeatureSpec) -> None:
        """``views``: each view's positives, in one or more tables (read as one, in order)."""
        items, self.starts, self.ends, self.keys, base = [], {}, {}, {}, 0
        indexed: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}  # per table: users, items, times
        for view, tables in views.items():
            for table in tables:
                if id(table) not in indexed:
                    times = table[TIMESTAMP].to_numpy() if TIMESTAMP in table.columns else None
                    indexed[id(table)] = (user_row.get_indexer(table[USER_ID]), spec.item_index(table[ITEM_ID]), times)
            parts = [indexed[id(table)] for table in tables]
            users = np.concatenate([p[0] for p in parts])
            times = None if any(p[2] is None for p in parts) else np.concatenate([p[2] for p in parts])
            order = _timeline_order(users, times)
            users = users[order]
            offsets = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=len(user_row)))]) + base
            self.starts[view], self.ends[view] = offsets[:-1], offsets[1:]
            if times is not None:  # (user, time) of each entry: where a training row falls
                self.keys[view] = _time_keys(users, times[order])
            items.append(np.concatenate([p[1] for p in parts])[order])
            base = int(offsets[-1])
        self.items = torch.from_numpy(np.concatenate(items))

    def bounds(self, view: str, users: np.ndarray, at_time_of: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(start, position) of each row's history: all of the view, or what precedes each
        row of ``at_time_of`` (interactions at the same second excluded)."""
        start = self.starts[view][users]
        if at_time_of is None or view not in self.keys or TIMESTAMP not in at_time_of.columns:
            return start, self.ends[view][users]
        keys = _time_keys(users, at_time_of[TIMESTAMP].to_numpy())
        return start, np.searchsorted(self.keys[view], keys, side="left") + self.starts[view][0]

    def window(self, starts: Tensor, positions: Tensor, length: int) -> Tensor | None:
        """(B, length) item indices before ``positions``, oldest first, 0-padded on the left."""
        if length == 0:
            return None
        index = positions.unsqueeze(1) - length + torch.arange(length, device=positions.device)  # (B, L)
        return torch.where(index >= starts.unsqueeze(1), self.items[index.clamp(min=0)], 0)

    def to(self, device: torch.device) -> Timeline:
        moved = copy.copy(self)
        moved.items = self.items.to(device)
        return moved


def _timeline_order(users: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """Positives ordered by (user, time), ties kept in log order: the one order used everywhere."""
    return np.lexsort((times, users) if times is not None else (users,))


def _time_keys(users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """One sortable int64 per (user, time): user-major, then epoch seconds (< 2**34, year 2514)."""
    return users.astype(np.int64) * (1 << 34) + times.astype(np.int64)


def lists_by_key(keys: pd.Index, owners: pd.Series, values: pd.Series, order: np.ndarray | None = None) -> pd.Series:
    """One list per entry of ``keys`` of the ``values`` their ``owners`` hold, taken in ``order``."""
    codes = keys.get_indexer(owners)
    permutation = np.argsort(codes, kind="stable") if order is None else order
    counts = np.bincount(codes, minlength=len(keys))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    flat = arrow_column(values).cast(pa.string()).take(pa.array(permutation))
    array = pa.ListArray.from_arrays(pa.array(offsets), flat)
    return pd.Series(pd.arrays.ArrowExtensionArray(array), index=pd.RangeIndex(len(keys)))


def build_users_frame(data: InteractionData, positives: pd.DataFrame) -> pd.DataFrame:
    """Every known user with their features, training history (oldest first) and all seen items."""
    sources = ([data.users[USER_ID]] if data.users is not None else []) + [data.interactions[USER_ID]]
    ids = pd.Index(pd.unique(pd.concat(sources)).astype("str"))
    frame = pd.DataFrame({USER_ID: ids})
    if data.users is not None:
        frame = frame.merge(data.users, on=USER_ID, how="left")
    times = positives[TIMESTAMP].to_numpy() if TIMESTAMP in positives.columns else None
    order = _timeline_order(ids.get_indexer(positives[USER_ID]), times)
    frame[HISTORY_COLUMN] = lists_by_key(ids, positives[USER_ID], positives[ITEM_ID], order)
    frame[SEEN_COLUMN] = lists_by_key(ids, data.interactions[USER_ID], data.interactions[ITEM_ID])
    return frame


def build_items_frame(data: InteractionData) -> pd.DataFrame:
    """The catalogue: every item of the items table or of the log, with its features."""
    sources = ([data.items[ITEM_ID]] if data.items is not None else []) + [data.interactions[ITEM_ID]]
    frame = pd.DataFrame({ITEM_ID: pd.unique(pd.concat(sources)).astype("str")})
    if data.items is not None:
        frame = frame.merge(data.items, on=ITEM_ID, how="left")
    return frame
