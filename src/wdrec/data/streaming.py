"""Out-of-core training data: interaction Parquet streamed row group by row group.

:class:`StreamingDataModule` trains on interaction logs larger than memory. It reuses the
in-memory pieces (the target rules of :func:`~wdrec.data.splits.with_target`, everything
:class:`~wdrec.data.module.FeatureDataModule` does with entities, the FeatureSpec and
batches) and replaces only what holds every interaction at once:

- **FeatureSpec in one pass.** One read of the id columns collects the set of users and
  items that occur in the log (``min_count`` counts training *entities*, as in
  ``FeatureSpec.fit``, so sets suffice); ``FeatureSpec.fit`` then runs on the entity
  tables restricted to those ids: one fit logic for both modules. With ``spec_path`` a
  saved spec is loaded and the pass is skipped (unless the target drops rows, see below).
- **Sharding.** Each epoch the row groups of all files are put in a seeded order (the
  same on every rank); the kept rows of that sequence are cut into
  ``world_size × num_workers`` contiguous ranges that differ by at most one row, one per
  (rank, DataLoader worker). A row group that straddles a cut is read by both shards,
  each keeping its own part, so every row is seen exactly once per epoch across all
  ranks and workers, nothing is dropped or repeated, and every worker of every rank
  yields the same number of batches (its rows split as evenly as possible into
  ``ceil(ceil(rows / shards) / positives_per_batch)`` batches): no DDP rank waits on
  another. Batches therefore hold up to ``batch_size`` examples, not exactly that many.
- **Shuffling** is within a buffer of ``shuffle_buffer`` rows per worker (each incoming
  block of rows replaces a random subset of the buffer, which is emitted), on top of the
  row-group order, both seeded by (seed, epoch, shard). A log sorted by user is therefore
  only shuffled across ``shuffle_buffer`` rows plus one row group at a time: size row
  groups and the buffer accordingly, or shuffle the files once when writing them.
- **Batches** are index tensors ``{"user", "item", "label"}`` into the entity tables;
  features are assembled on the device by the base class, as for
  :class:`~wdrec.data.datamodule.InteractionDataModule`. Ids missing from the entity tables
  map to the encoded tables' extra all-unknown row.

Assumptions and limits (what out of core costs):

- the users and items tables, and the sets of ids in the log, fit in memory: users
  and items are far fewer than interactions. The validation log is read whole.
- implicit negatives are drawn uniformly over the catalogue, never the row's own item,
  but without checking the user's other positives (that needs every interaction):
  :class:`~wdrec.data.sampling.OtherItemSampler`. Evaluation negatives are drawn the same way.
- no point-in-time ``history`` feature (it needs each user's whole timeline): declaring one
  is an error; use :class:`~wdrec.data.datamodule.InteractionDataModule`.
- no full-ranking evaluation (it needs every user's seen items): validation gives
  ``val_loss``, ``val_auc``, ``val_logloss`` (or ``val_rmse``/``val_mae``); no test or
  predict loaders. The ``seen`` lists written into a bundle are empty.
- every DDP rank runs the one-pass fit itself (the result is deterministic, so the specs
  agree); save the spec once and pass ``spec_path`` to skip it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wdrec.data.batches import Batch, TrainingPlan, batches_per_shard, with_sampled_negatives
from wdrec.data.entities import empty_lists, entity_frame, rows_of
from wdrec.data.features import Cross, FeatureSpec, Field
from wdrec.data.io import read_parquet
from wdrec.data.module import FeatureDataModule
from wdrec.data.sampling import OtherItemSampler
from wdrec.data.schema import ITEM_ID, LABEL, RATING, SEEN_COLUMN, USER_ID, DataError, canonical_side_table
from wdrec.data.splits import Target, with_target

READ_ROWS = 1 << 16  # rows per record batch read from a row group: bounds the memory of one read


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group and how many of its rows the target keeps."""

    path: str
    index: int
    rows: int


# ------------------------------------------------------------------ reading
class InteractionFiles:
    """Interaction Parquet files: checked schemas, row groups, and labelled rows.

    Args:
        paths: a Parquet file, a directory of ``*.parquet`` files (read in name order), or
            a list of files; canonical columns ``user_id``, ``item_id`` and optional
            ``label``, ``rating`` (other columns are not read).
        target, positive_threshold, negative_threshold: as in
            :func:`~wdrec.data.splits.with_target`, applied to every block read.
    """

    def __init__(
        self,
        paths: str | Sequence[str],
        target: Target,
        positive_threshold: float = 4.0,
        negative_threshold: float = 2.0,
    ) -> None:
        self.paths = _parquet_paths(paths)
        self.target, self.thresholds = target, (positive_threshold, negative_threshold)
        self.columns: dict[str, list[str]] = {}  # path -> columns to read
        self.num_rows: dict[str, list[int]] = {}  # path -> rows per row group
        for path in self.paths:
            metadata = _open(path).metadata
            schema = metadata.schema.to_arrow_schema()
            self.columns[path] = _check_schema(schema, path, target)
            self.num_rows[path] = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
            first = self.columns[self.paths[0]]
            if self.columns[path] != first:  # the target must mean the same in every file
                raise DataError(path, None, f"reads columns {self.columns[path]}, but {self.paths[0]} has {first}")

    @property
    def drops_rows(self) -> bool:
        """Whether the target keeps only some rows (a 0/1 label under implicit, ratings under binary)."""
        columns = set(self.columns[self.paths[0]])
        return (self.target == "implicit" and LABEL in columns) or (self.target == "binary" and LABEL not in columns)

    def row_groups(self) -> list[RowGroup]:
        """Every row group, counted from the file footers (valid when no row is dropped)."""
        return [RowGroup(p, g, n) for p in self.paths for g, n in enumerate(self.num_rows[p])]

    def scan(self, ids: bool) -> tuple[list[RowGroup], pa.Array | None, pa.Array | None]:
        """One pass: kept rows per row group, and (``ids``) the distinct users and items kept."""
        groups, users, items = [], [], []
        for group in self.row_groups():
            kept = 0
            for user, item, label in self.read(group, with_ids=ids):
                kept += len(label)
                if ids:
                    users.append(pc.unique(user))
                    items.append(pc.unique(item))
            groups.append(RowGroup(group.path, group.index, kept))
            if ids and len(users) > 64:  # keep the partial sets small
                users, items = [_distinct(users)], [_distinct(items)]
        if not ids:
            return groups, None, None
        return groups, _distinct(users), _distinct(items)

    def read(self, group: RowGroup, with_ids: bool = True) -> Iterator[tuple[pa.Array, pa.Array, np.ndarray]]:
        """(user ids, item ids, labels) of the rows the target keeps, block by block.

        Ids come back as arrow strings (integer ids as their decimal text); with
        ``with_ids=False`` only the label columns are read and the id arrays are empty.
        """
        columns = self.columns[group.path] if with_ids else [c for c in self.columns[group.path] if c in (LABEL, RATING)]
        origin = f"{group.path} (row group {group.index})"
        try:
            blocks = _open(group.path).iter_batches(batch_size=READ_ROWS, row_groups=[group.index], columns=columns)
            for block in blocks:
                yield self._labelled(block, origin, with_ids)
        except (OSError, pa.ArrowException) as error:  # a truncated or corrupted file
            raise DataError(origin, None, f"cannot read the Parquet data: {error}") from None

    def _labelled(self, block: pa.RecordBatch, origin: str, with_ids: bool) -> tuple[pa.Array, pa.Array, np.ndarray]:
        for name in block.schema.names:
            if block.column(name).null_count:
                raise DataError(origin, name, f"{block.column(name).null_count} missing values; every row needs one")
        values = {c: block.column(c).to_numpy() for c in (LABEL, RATING) if c in block.schema.names}
        if LABEL in values and not ((values[LABEL] == 0) | (values[LABEL] == 1)).all():
            raise DataError(origin, LABEL, f"expected 0/1 labels, found {sorted(set(values[LABEL].tolist()) - {0, 1})[:5]}")
        frame = pd.DataFrame(values, index=pd.RangeIndex(len(block)))
        kept = with_target(frame, self.target, origin, *self.thresholds)  # the one place target rules live
        label = kept[LABEL].to_numpy(dtype=np.float32)
        if not with_ids:
            return pa.array([], pa.string()), pa.array([], pa.string()), label
        ids = [_as_string_ids(block.column(c)) for c in (USER_ID, ITEM_ID)]
        if len(kept) < len(block):
            where = pa.array(kept.index.to_numpy())
            ids = [a.take(where) for a in ids]
        return ids[0], ids[1], label


def _parquet_paths(paths: str | Sequence[str]) -> list[str]:
    listed = [paths] if isinstance(paths, str | Path) else list(paths)
    out: list[str] = []
    for entry in listed:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.glob("*.parquet") if p.is_file())
            if not found:
                raise DataError(str(path), None, "no *.parquet files in this directory")
            out += [str(p) for p in found]
        elif path.is_file():
            out.append(str(path))
        else:
            raise DataError(str(path), None, "no such file or directory")
    if not out:
        raise DataError("interactions", None, "no Parquet files given")
    return out


def _open(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise DataError(path, None, f"not a readable Parquet file ({error})") from None


def _check_schema(schema: pa.Schema, path: str, target: Target) -> list[str]:
    """The columns to read; a DataError names the file and the first bad column."""
    names = schema.names
    for column in (USER_ID, ITEM_ID):
        if column not in names:
            raise DataError(path, column, f"missing; expected columns [user_id, item_id] (+ label, rating), found {names}")
        kind = schema.field(column).type
        kind = kind.value_type if pa.types.is_dictionary(kind) else kind
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)):
            raise DataError(path, column, f"ids must be strings or integers, found {kind}")
    for column in (LABEL, RATING):
        if column in names and not (pa.types.is_integer(schema.field(column).type) or pa.types.is_floating(schema.field(column).type)):
            raise DataError(path, column, f"expected numbers, found {schema.field(column).type}")
    if target == "rating" and RATING not in names:
        raise DataError(path, RATING, f"missing; target 'rating' needs it, found {names}")
    if target == "binary" and LABEL not in names and RATING not in names:
        raise DataError(path, LABEL, f"missing; target 'binary' needs a label or rating column, found {names}")
    return [c for c in (USER_ID, ITEM_ID, LABEL, RATING) if c in names]


def _as_string_ids(column: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column if pa.types.is_string(column.type) else column.cast(pa.string())


def _distinct(arrays: list[pa.Array]) -> pa.Array:
    return pc.unique(pa.concat_arrays(arrays)) if arrays else pa.array([], pa.string())


# ------------------------------------------------------------------ sharding
def epoch_order(groups: Sequence[RowGroup], seed: int, epoch: int) -> np.ndarray:
    """The row groups' order in this epoch: the same on every rank and worker."""
    return np.random.default_rng([seed, epoch]).permutation(len(groups))


def shard_parts(groups: Sequence[RowGroup], order: np.ndarray, shard: int, shards: int) -> list[tuple[RowGroup, int, int]]:
    """The row groups (in ``order``) of one shard, each with the [start, stop) of its kept
    rows that the shard owns. Shards are contiguous ranges of the kept rows in ``order``,
    of sizes differing by at most one, so every row falls in exactly one shard."""
    sizes = np.array([groups[i].rows for i in order], dtype=np.int64)
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if len(ends) else 0
    low, high = shard * total // shards, (shard + 1) * total // shards
    parts = []
    for i, end, size in zip(order, ends, sizes, strict=True):
        start = int(end - size)
        a, b = max(low, start), min(high, int(end))
        if a < b:
            parts.append((groups[i], a - start, b - start))
    return parts


def batch_sizes(rows: int, batches: int) -> np.ndarray:
    """``rows`` split into ``batches`` sizes that differ by at most one."""
    return np.full(batches, rows // batches) + (np.arange(batches) < rows % batches)


class ShuffleBuffer:
    """A fixed-size buffer of rows: each block pushed in replaces a random subset of the
    buffer, which comes out (vectorised reservoir-style shuffling); ``drain`` empties it in
    random order."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity, self.rng = capacity, rng
        self.columns: list[np.ndarray] | None = None
        self.size = 0

    def push(self, columns: list[np.ndarray]) -> list[np.ndarray] | None:
        n = len(columns[0])
        if self.columns is None:
            self.columns = [np.empty(self.capacity, dtype=c.dtype) for c in columns]
        room = self.capacity - self.size
        take = min(room, n)
        for buffer, column in zip(self.columns, columns, strict=True):
            buffer[self.size : self.size + take] = column[:take]
        self.size += take
        if take == n:
            return None
        rest = [c[take:] for c in columns]
        out: list[list[np.ndarray]] = [[] for _ in columns]
        for start in range(0, n - take, self.capacity):  # a block larger than the buffer: in pieces
            piece = [c[start : start + self.capacity] for c in rest]
            where = self.rng.choice(self.capacity, len(piece[0]), replace=False)
            for k, (buffer, column) in enumerate(zip(self.columns, piece, strict=True)):
                out[k].append(buffer[where])
                buffer[where] = column
        return [np.concatenate(parts) for parts in out]

    def drain(self) -> list[np.ndarray] | None:
        if self.columns is None or self.size == 0:
            return None
        order = self.rng.permutation(self.size)
        out = [buffer[: self.size][order] for buffer in self.columns]
        self.size = 0
        return out


class StreamingBatches(IterableDataset):
    """One rank's training batches, read from Parquet; see the module docstring.

    Iterated by a DataLoader with ``num_workers`` workers, each worker yields its own shard;
    iterated directly (no worker), it yields all of its workers' shards one after another.
    """

    def __init__(
        self,
        files: InteractionFiles,
        groups: list[RowGroup],
        users: pd.Index,
        items: pd.Index,
        plan: TrainingPlan,
        shuffle_buffer: int,
        num_workers: int = 0,
    ) -> None:
        self.files, self.groups, self.users, self.items = files, groups, users, items
        self.plan, self.shuffle_buffer, self.workers = plan, shuffle_buffer, max(1, num_workers)
        self.total = sum(g.rows for g in groups)
        self.shards = plan.world_size * self.workers
        if self.total < self.shards:
            raise ValueError(f"{self.total} training rows cannot be shared by {self.shards} (rank, worker) shards")
        # Every worker of every rank yields this many batches (the largest shard's count).
        self.batches_per_worker = batches_per_shard(self.total, self.shards, plan.positives_per_batch)

    def __len__(self) -> int:
        return self.batches_per_worker * self.workers

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        if info is None:
            for worker in range(self.workers):
                yield from self.batches(worker)
            return
        if info.num_workers != self.workers:
            raise ValueError(f"StreamingBatches was planned for {self.workers} workers, runs in {info.num_workers}")
        yield from self.batches(info.id)

    def batches(self, worker: int) -> Iterator[Batch]:
        """The batches of shard (rank, ``worker``) in the current epoch."""
        seed, epoch, shard = self.plan.seed, self.plan.epoch(), self.plan.rank * self.workers + worker
        parts = shard_parts(self.groups, epoch_order(self.groups, seed, epoch), shard, self.shards)
        rng = np.random.default_rng([seed, epoch, shard, 1])
        sizes = batch_sizes(sum(b - a for _, a, b in parts), self.batches_per_worker)
        buffer = ShuffleBuffer(self.shuffle_buffer, rng)

        def shuffled() -> Iterator[list[np.ndarray]]:
            for block in self._blocks(parts):
                out = buffer.push(block)
                if out is not None:
                    yield out
            out = buffer.drain()
            if out is not None:
                yield out

        pending: list[list[np.ndarray]] = []
        held, k = 0, 0
        for columns in shuffled():
            pending.append(columns)
            held += len(columns[0])
            if k == len(sizes) or held < sizes[k]:
                continue
            rows, offset = [np.concatenate(c) for c in zip(*pending, strict=True)], 0
            while k < len(sizes) and held - offset >= sizes[k]:
                end = offset + int(sizes[k])
                yield self._batch(*(c[offset:end] for c in rows), rng)
                offset, k = end, k + 1
            pending, held = [[c[offset:] for c in rows]], held - offset
        for _ in range(k, len(sizes)):  # only empty batches can be left (more batches than rows)
            yield self._batch(*(np.zeros(0, dtype=d) for d in (np.int64, np.int64, np.float32)), rng)

    def _blocks(self, parts: list[tuple[RowGroup, int, int]]) -> Iterator[list[np.ndarray]]:
        for group, start, stop in parts:
            seen = 0
            for user, item, label in self.files.read(group):
                a, b = max(start - seen, 0), min(stop - seen, len(label))
                seen += len(label)
                if a < b:
                    yield [rows_of(self.users, user.slice(a, b - a)), rows_of(self.items, item.slice(a, b - a)), label[a:b]]
                if seen >= stop:
                    break

    def _batch(self, user: np.ndarray, item: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Batch:
        rows = {"user": torch.from_numpy(user), "item": torch.from_numpy(item), "label": torch.from_numpy(label)}
        return with_sampled_negatives(rows, self.plan.sampler, self.plan.negatives, rng)


# ---------------------------------------------------------------- the module
class StreamingDataModule(FeatureDataModule):
    """Interaction Parquet larger than memory → Wide&Deep feature batches.

    Validation is pointwise only (``full_ranking`` is false): held-out rows, no ranking.

    Args:
        interactions: the training log: a Parquet file, a directory of ``*.parquet``
            files or a list of files, with columns ``user_id``, ``item_id`` and optional
            ``label``, ``rating``. Read row group by row group; never held whole.
        users, items: Parquet entity tables (id column plus feature columns), read whole:
            they must fit in memory. Without them, entities are the ids of the log.
        features, crosses: as for :class:`~wdrec.data.datamodule.InteractionDataModule`
            (no ``history`` field).
        target: ``implicit`` (``negatives`` sampled per positive, uniformly), ``binary``
            (``label``, or ratings cut by the thresholds) or ``rating``.
        negatives: sampled negatives per positive (implicit target only); fresh each epoch.
        positive_threshold, negative_threshold: binary target from ratings.
        batch_size: examples per optimizer step across all devices, negatives included (at most).
        eval_batch_size: examples per validation batch across all devices.
        shuffle_buffer: rows held for shuffling, per DataLoader worker.
        validation: optional Parquet log (read whole) for ``val_loss`` and ``val_auc``.
        spec_path: a saved FeatureSpec JSON to use instead of fitting one.
        num_workers: DataLoader worker processes reading the training log.
        seed: drives the row-group order, shuffling and negative sampling.
    """

    can_rank = False

    def __init__(
        self,
        interactions: str | list[str],
        users: str | None = None,
        items: str | None = None,
        features: list[Field] | None = None,
        crosses: list[Cross] | None = None,
        target: Target = "implicit",
        negatives: int = 4,
        positive_threshold: float = 4.0,
        negative_threshold: float = 2.0,
        batch_size: int = 4096,
        eval_batch_size: int = 16384,
        shuffle_buffer: int = 1_000_000,
        validation: str | list[str] | None = None,
        spec_path: str | None = None,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__(features, crosses, target, negatives, batch_size, eval_batch_size, seed)
        self.save_hyperparameters()
        if negatives < 0 or batch_size < 1 or eval_batch_size < 1 or shuffle_buffer < 1 or num_workers < 0:
            raise ValueError(
                f"negatives and num_workers must be >= 0, batch sizes and shuffle_buffer >= 1; got negatives={negatives}, "
                f"batch_size={batch_size}, eval_batch_size={eval_batch_size}, shuffle_buffer={shuffle_buffer}, "
                f"num_workers={num_workers}"
            )
        if target not in ("implicit", "binary", "rating"):
            raise ValueError(f"target must be implicit, binary or rating, got {target!r}")
        if statistics := [f.name for f in self.fields if f.statistic is not None]:
            raise ValueError(f"feature {statistics[0]!r}: a statistic over the training rows needs them in memory; "
                             "StreamingDataModule reads them once per epoch, use InteractionDataModule")  # fmt: skip
        history = [f.name for f in self.fields if f.kind == "history"]
        if history:
            raise ValueError(
                f"feature {history[0]!r}: point-in-time history needs each user's whole timeline; "
                "StreamingDataModule does not support kind 'history', use InteractionDataModule"
            )
        self.declared = features is not None
        self.interactions, self.validation = interactions, validation
        self.users_path, self.items_path, self.spec_path = users, items, spec_path
        self.thresholds = (positive_threshold, negative_threshold)
        self.shuffle_buffer, self.num_workers = shuffle_buffer, num_workers

    # ------------------------------------------------------------ build once
    def _read(self) -> None:
        self.files = InteractionFiles(self.interactions, self.target, *self.thresholds)
        users = _side_table(self.users_path, USER_ID)
        items = _side_table(self.items_path, ITEM_ID)
        train, spec = None, None
        if self.spec_path is None:
            self.row_groups, seen_users, seen_items = self.files.scan(ids=True)
            users_frame, items_frame = entity_frame(users, USER_ID, seen_users), entity_frame(items, ITEM_ID, seen_items)
            train = pd.DataFrame(_same_length(seen_users, seen_items))  # FeatureSpec.fit reads only the id sets
        else:
            spec = self._load_spec()
            self.row_groups = self.files.scan(ids=False)[0] if self.files.drops_rows else self.files.row_groups()
            users_frame = entity_frame(users, USER_ID, _vocabulary(spec, USER_ID))
            items_frame = entity_frame(items, ITEM_ID, _vocabulary(spec, ITEM_ID))
        if sum(g.rows for g in self.row_groups) == 0:
            raise DataError(str(self.interactions), None, "no training rows (after applying the target)")
        if self.negatives and len(items_frame) < 2:
            raise ValueError(f"negative sampling needs at least 2 items, the catalogue has {len(items_frame)}")
        users_frame[SEEN_COLUMN] = empty_lists(len(users_frame))  # bundles read it; unknown out of core
        self._use_entities(users_frame, items_frame, train, spec)
        self.sampler = OtherItemSampler(len(items_frame))
        self._summary = {
            "interactions": sum(g.rows for g in self.row_groups), "users": len(users_frame), "items": len(items_frame),
            "files": len(self.files.paths), "row_groups": len(self.row_groups),
            "user_features": [c for c in users.columns if c != USER_ID] if users is not None else [],
            "item_features": [c for c in items.columns if c != ITEM_ID] if items is not None else [],
        }  # fmt: skip

    def summary(self) -> dict[str, object]:
        self._build()
        return self._summary

    def _load_spec(self) -> FeatureSpec:
        spec = FeatureSpec.load(Path(self.spec_path).expanduser())
        if self.declared and [asdict(f) for f in self.fields] != [asdict(f) for f in spec.fields]:
            raise ValueError(f"{self.spec_path}: the saved FeatureSpec's fields differ from the declared features")
        history = [f.name for f in spec.fields if f.kind == "history"]
        if history:
            raise ValueError(f"{self.spec_path}: feature {history[0]!r} is a history; StreamingDataModule cannot build it")
        self.fields, self.crosses = spec.fields, spec.crosses
        return spec

    # ------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        self._build()
        dataset = StreamingBatches(self.files, self.row_groups, self._user_row, self._item_row, self._training_plan(),
                                   self.shuffle_buffer, self.num_workers)  # fmt: skip
        return self._loader(dataset, self.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        """One pointwise loader over the validation log (none without one)."""
        self._build()
        return [] if self.validation is None else [self._pointwise_loader(self._validation_rows())]

    def _validation_rows(self) -> Batch:
        if not hasattr(self, "_validation"):
            files = InteractionFiles(self.validation, self.target, *self.thresholds)
            parts = [(rows_of(self._user_row, u), rows_of(self._item_row, i), y)
                     for group in files.row_groups() for u, i, y in files.read(group)]  # fmt: skip
            user, item, label = (torch.from_numpy(np.concatenate(c)) for c in zip(*parts, strict=True))
            # Implicit: a fixed, seeded set of uniform negatives beside each positive.
            rng = np.random.default_rng([self.seed, 1])
            self._validation = with_sampled_negatives({"user": user, "item": item, "label": label}, self.sampler, self.negatives, rng)
        return self._validation


# ------------------------------------------------------------------- tables
def _side_table(path: str | None, id_column: str) -> pd.DataFrame | None:
    if path is None:
        return None
    path = str(Path(path).expanduser())
    try:
        frame = read_parquet(Path(path))
    except (OSError, pa.ArrowException) as error:
        raise DataError(path, None, f"not a readable Parquet file ({error})") from None
    return canonical_side_table(frame, id_column, path)


def _vocabulary(spec: FeatureSpec, column: str) -> pa.Array | None:
    """Ids a loaded spec knows (so an id feature keeps its values without a users table)."""
    for fld in spec.fields:
        if fld.kind == "categorical" and fld.column == column:
            return spec.vocabulary_array(fld.name)
    return None


def _same_length(users: pa.Array, items: pa.Array) -> dict[str, np.ndarray]:
    """Two id sets as equal-length columns (repeats change no set): the ``train`` FeatureSpec.fit reads."""
    n = max(len(users), len(items))
    return {USER_ID: np.resize(users.to_numpy(zero_copy_only=False), n), ITEM_ID: np.resize(items.to_numpy(zero_copy_only=False), n)}
