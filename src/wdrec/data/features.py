"""FeatureSpec: the one transform from raw rows to model tensors, for training and serving.

Wide&Deep reads two kinds of input (Cheng et al., 2016, section 3):

- the **wide** part, a linear model over sparse one-hot ids and hashed cross-products
  (the paper's ``AND(user_installed_app=netflix, impression_app=pandora)``);
- the **deep** part, embeddings of categorical fields plus normalised numbers.

Features are declared in the config (:class:`Field`, :class:`Cross`), fitted on the
training split only, and saved as JSON with the model. Almost every feature belongs to a
user or to an item, so entities are encoded once into :class:`SideTensors` (one row per
user or catalogue item) and a batch is two row gathers plus the crosses
(:meth:`FeatureSpec.assemble`). Serving takes one user row and the whole catalogue
through the same method; the user side then has batch size 1 and broadcasts.

Batch layout (keys of the dict that :class:`~wdrec.model.widedeep.WideDeep` reads):

======================  ==========  =================================================
``user.categorical``    (Bu, Fu)    vocabulary index per categorical field, 0 = OOV
``user.dense``          (Bu, Du)    standardised numbers
``user.bag.<name>``     (Bu, L)     multi-hot / history values, 0 = padding
``item.*``              (B, ...)    the same for the item side
``wide.user``           (Bu, Wu)    wide-table ids of the user's one-hot features
``wide.item``           (B, Wi)     wide-table ids of the item's one-hot features
``wide.cross``          (B, Wc)     wide-table ids of the hashed cross-products
======================  ==========  =================================================

Bu is B in training and 1 when one user is scored against many items; a history bag
(the candidate masked out of it) and ``wide.user`` then have B rows, as they depend on the item.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from wdrec.data.io import arrow_column, atomic_write_text
from wdrec.data.schema import ITEM_ID, USER_ID, DataError

Side = Literal["user", "item"]
Kind = Literal["categorical", "numeric", "multi_hot", "history"]
SIDES: tuple[Side, Side] = ("user", "item")
HISTORY_COLUMN = "history"
FORMAT_VERSION = 1


@dataclass
class Field:
    """One input feature, declared in the config.

    ``history`` is the user's recent training positives (item ids, most recent kept),
    the paper's "installed apps"; it is crossed with the candidate item in the wide part.
    The candidate itself is always left out of its own history, so a positive cannot
    leak its label through it.
    """

    name: str
    side: Side
    kind: Kind = "categorical"
    column: str | None = None  # source column; defaults to `name` (history: "history")
    min_count: int = 1  # values seen on fewer training entities share the OOV index 0
    transform: Literal["standardize", "bucketize"] = "standardize"  # numeric only
    boundaries: list[float] | None = None  # bucketize: cut points; None = train quantiles
    num_buckets: int = 10  # bucketize without explicit boundaries
    max_length: int = 20  # multi_hot / history: values kept per row
    wide: bool = True  # one-hot ids into the wide part (categorical, buckets, multi-hot)
    deep: bool = True  # embedding or dense value into the deep part
    embedding_dim: int | None = None  # None: 6 * cardinality ** 0.25, within [4, 64]
    # numeric only: computed from the training rows for the side's user or item instead of read from a table
    # (count: log(1 + rows); label_mean: the mean label or rating, shrunk to the global one; mean_time: when, on average)
    statistic: Literal["count", "label_mean", "mean_time"] | None = None

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"feature {self.name!r}: side must be 'user' or 'item', got {self.side!r}")
        if self.kind not in ("categorical", "numeric", "multi_hot", "history"):
            raise ValueError(
                f"feature {self.name!r}: unknown kind {self.kind!r}; expected categorical, numeric, multi_hot or history"
            )
        if self.transform not in ("standardize", "bucketize"):
            raise ValueError(f"feature {self.name!r}: transform must be standardize or bucketize, got {self.transform!r}")
        if self.kind == "history" and self.side != "user":
            raise ValueError(f"feature {self.name!r}: history is a user-side feature")
        if self.statistic not in (None, "count", "label_mean", "mean_time"):
            raise ValueError(f"feature {self.name!r}: statistic must be count, label_mean or mean_time, got {self.statistic!r}")
        if self.statistic is not None and self.kind != "numeric":
            raise ValueError(f"feature {self.name!r}: a statistic is a number: give it kind numeric, not {self.kind}")
        if self.max_length < 1 or self.min_count < 1:
            raise ValueError(f"feature {self.name!r}: max_length and min_count must be >= 1")
        if self.column is None:
            self.column = HISTORY_COLUMN if self.kind == "history" else self.name

    @property
    def is_dense(self) -> bool:
        return self.kind == "numeric" and self.transform == "standardize"

    @property
    def is_bag(self) -> bool:
        return self.kind in ("multi_hot", "history")

    @property
    def is_categorical(self) -> bool:
        """One index per row: categoricals and bucketised numbers."""
        return self.kind == "categorical" or (self.kind == "numeric" and self.transform == "bucketize")


@dataclass
class Cross:
    """A cross-product of two fields for the wide part, hashed into ``num_buckets``.

    Crosses smaller than ``num_buckets`` are kept exact (one weight per value pair).
    """

    fields: list[str]
    num_buckets: int = 100_003

    def __post_init__(self) -> None:
        if len(self.fields) != 2:
            raise ValueError(f"a cross takes exactly two fields, got {self.fields}")
        if self.num_buckets < 1:
            raise ValueError(f"cross {self.fields}: num_buckets must be >= 1, got {self.num_buckets}")

    @property
    def name(self) -> str:
        return "_x_".join(self.fields)


@dataclass
class SideTensors:
    """Encoded features of users or items: one row per entity."""

    categorical: Tensor  # (N, F) long
    dense: Tensor  # (N, D) float32
    bags: dict[str, Tensor] = field(default_factory=dict)  # name -> (N, L) long, 0 = padding

    def __len__(self) -> int:
        return self.categorical.shape[0]

    def take(self, rows: Tensor) -> SideTensors:
        return SideTensors(
            self.categorical[rows], self.dense[rows], {name: bag[rows] for name, bag in self.bags.items()}
        )

    def with_bags(self, bags: dict[str, Tensor]) -> SideTensors:
        return SideTensors(self.categorical, self.dense, {**self.bags, **bags})

    def as_batch(self, side: Side) -> dict[str, Tensor]:
        """The side's keys of a model batch (``<side>.categorical``, ``.dense``, ``.bag.<name>``)."""
        return {f"{side}.categorical": self.categorical, f"{side}.dense": self.dense,
                **{f"{side}.bag.{name}": bag for name, bag in self.bags.items()}}  # fmt: skip

    @classmethod
    def from_batch(cls, batch: dict[str, Tensor], side: Side) -> SideTensors:
        """One side's tensors back from a batch's keys (:meth:`as_batch`): a ranking batch carries its
        users that way, to be scored against a catalogue whose half is computed once."""
        prefix = f"{side}.bag."
        bags = {key.removeprefix(prefix): value for key, value in batch.items() if key.startswith(prefix)}
        return cls(batch[f"{side}.categorical"], batch[f"{side}.dense"], bags)

    def to(self, device: torch.device | str) -> SideTensors:
        return SideTensors(
            self.categorical.to(device), self.dense.to(device), {n: b.to(device) for n, b in self.bags.items()}
        )


@dataclass(frozen=True)
class CrossTable:
    """A cross's wide ids from one code per value: the pair (a, b) has code ``left[a] + right[b]``.

    Exact crosses (every pair fits): ``(a-1)·|B| + (b-1)``, within ``[0, s)``. Hashed:
    ``(a·P1 mod s) + (b·P2 mod s)``, within ``[0, 2s)``: one wrap gives ``(a·P1 + b·P2) mod s``.
    A missing value (0) has code ``2s``, so a pair with one codes at ``2s`` or more: padding.
    The id is the offset plus the wrapped code. Serving sums weights by code (:meth:`by_code`).
    """

    left: Tensor  # (|A|,) long: code of each value of the first field
    right: Tensor  # (|B|,) long: code of each value of the second field
    offset: int  # the cross's first wide id
    size: int  # s: its number of wide ids

    def ids(self, a: Tensor, b: Tensor) -> Tensor:
        """Wide ids of the pairs ``(a, b)`` (index tensors that broadcast), 0 where a value is missing."""
        code = self.left[a] + self.right[b]
        code = torch.where(code >= self.size, code - self.size, code)  # one wrap; a missing pair stays >= s
        return torch.where(code < self.size, code + self.offset, 0)

    def by_code(self, weights: Tensor) -> Tensor:
        """``weights`` (the wide table) laid out by code, (4s + 1,): ``by_code(w)[left[a] + right[b]]``
        is the weight of the pair's id, 0 when a value is missing, with no wrap to compute."""
        own = weights[self.offset : self.offset + self.size]
        return torch.cat([own, own, own.new_zeros(2 * self.size + 1)])


def default_embedding_dim(cardinality: int) -> int:
    """Google's rule of thumb for embedding width: 6 · cardinality^¼, capped at 64."""
    return int(min(64, max(4, round(6 * cardinality**0.25))))


# Two primes below 2**31: a * P1 + b * P2 stays below 2**63 for indices below 2**31,
# so the hash never overflows int64 on any device.
CROSS_PRIMES = (2_147_483_629, 1_000_000_007)  # a pair hashes to (a * P1 + b * P2) mod size (CrossTable)
_P1, _P2 = CROSS_PRIMES


class FeatureSpec:
    """Declared features plus what was learnt from the training split.

    Build with :meth:`fit`, persist with :meth:`save` / :meth:`load` (JSON, no pickle).

    Example::

        spec = FeatureSpec.fit([Field("user_id", "user"), Field("item_id", "item")], [], train, users, items)
        batch = spec.assemble(spec.encode("user", users).take(u), spec.encode("item", items).take(i))
    """

    def __init__(
        self,
        fields: list[Field],
        crosses: list[Cross],
        vocabularies: dict[str, list[str]],
        numeric_stats: dict[str, list[float]],
    ) -> None:
        self.fields = fields
        self.crosses = crosses
        self.vocabularies = vocabularies
        self.numeric_stats = numeric_stats  # standardize: [mean, std]; bucketize: boundaries
        self._by_name = {f.name: f for f in fields}
        self._lookups = {name: pd.Index(vocab) for name, vocab in vocabularies.items()}
        self.cross_sizes = {
            c.name: max(1, min(math.prod(self.cardinality(n) - 1 for n in c.fields), c.num_buckets)) for c in crosses
        }
        self.wide_offsets = self._wide_offsets()
        self._cross_tables: dict[tuple[str, str], CrossTable] = {}
        self._arrow_vocabularies: dict[str, pa.Array] = {}

    # ------------------------------------------------------------------ layout
    def side_fields(self, side: Side) -> list[Field]:
        return [f for f in self.fields if f.side == side]

    def statistic_columns(self, side: Side) -> list[str]:
        """Columns that training computes from the side's rows (``statistic`` fields): the model's
        inputs, but neither catalogue content nor something a request can know."""
        return [f.column for f in self.side_fields(side) if f.statistic is not None]

    def given_columns(self, side: Side) -> list[str]:
        """The side's feature columns that an entity table or a request gives: not its id, nor its statistics."""
        left_out = {USER_ID if side == "user" else ITEM_ID, *self.statistic_columns(side)}
        return list(dict.fromkeys(f.column for f in self.side_fields(side) if f.column not in left_out))

    def categorical_fields(self, side: Side) -> list[Field]:
        return [f for f in self.side_fields(side) if f.is_categorical]

    def dense_fields(self, side: Side) -> list[Field]:
        return [f for f in self.side_fields(side) if f.is_dense and f.deep]

    def bag_fields(self, side: Side) -> list[Field]:
        return [f for f in self.side_fields(side) if f.is_bag]

    def field(self, name: str) -> Field:
        return self._by_name[name]

    def history_fields(self) -> list[Field]:
        """The user bags that leave out the item being scored (:meth:`assemble` masks it out)."""
        return [f for f in self.bag_fields("user") if f.kind == "history"]

    def cardinality(self, name: str) -> int:
        """Rows of the field's index space, OOV/padding index 0 included."""
        fld = self._by_name[name]
        if fld.kind == "numeric":
            return len(self.numeric_stats[name]) + 2
        return len(self.vocabularies[self._vocabulary_name(fld)]) + 1

    @property
    def item_id_field(self) -> Field:
        for fld in self.fields:
            if fld.side == "item" and fld.kind == "categorical" and fld.column == ITEM_ID:
                return fld
        raise ValueError("no item id feature: declare Field(name='item_id', side='item') (history and crosses need it)")

    def vocabulary_array(self, name: str) -> pa.Array:
        """The vocabulary ``name`` as an Arrow string array (index i is value index i + 1), built once."""
        if name not in self._arrow_vocabularies:
            self._arrow_vocabularies[name] = pa.array(self.vocabularies[name], pa.string())
        return self._arrow_vocabularies[name]

    def _vocabulary_name(self, fld: Field) -> str:
        return self.item_id_field.name if fld.kind == "history" else fld.name

    def _wide_offsets(self) -> dict[str, int]:
        """Where each wide feature's weights start in the one wide table (row 0 is padding)."""
        offsets, start = {}, 1
        for fld in self.fields:
            if fld.wide and (fld.is_categorical or fld.is_bag):
                offsets[fld.name] = start
                start += self.cardinality(fld.name)
        for cross in self.crosses:
            offsets[cross.name] = start
            start += self.cross_sizes[cross.name]
        offsets["<size>"] = start
        return offsets

    @property
    def wide_size(self) -> int:
        return self.wide_offsets["<size>"]

    def wide_owner(self, wide_id: int) -> tuple[str, int]:
        """The feature or cross (by name) whose weights hold ``wide_id``, and the id's index among
        them: a field's value index (:meth:`value_label`), or a cross's code (:class:`CrossTable`).
        Id 0 is padding and belongs to none."""
        if not 0 < wide_id < self.wide_size:
            raise ValueError(f"wide id {wide_id} is outside [1, {self.wide_size})")
        name, start = max(((n, s) for n, s in self.wide_offsets.items() if s <= wide_id), key=lambda pair: pair[1])
        return name, wide_id - start

    def value_label(self, name: str, index: int) -> str:
        """A field's value index as text: the vocabulary value (history: the item id), a bucket of a
        bucketised number (``<18``, ``18-25``, ``>=56``), or ``unknown`` for index 0."""
        fld = self._by_name[name]
        if index == 0:
            return "unknown"
        if fld.kind != "numeric":
            return self.vocabularies[self._vocabulary_name(fld)][index - 1]
        if fld.is_dense:
            raise ValueError(f"feature {name!r} is a standardized number: it has no value indices")
        cuts = [f"{b:g}" for b in self.numeric_stats[name]]
        return f"<{cuts[0]}" if index == 1 else f">={cuts[-1]}" if index > len(cuts) else f"{cuts[index - 2]}-{cuts[index - 1]}"

    def layout(self) -> dict:
        """Everything the network needs to size itself; plain JSON-able types."""
        layout: dict = {"wide_size": self.wide_size}
        for side in SIDES:
            layout[side] = {
                "categorical": [self._embedding(f) for f in self.categorical_fields(side)],
                "bags": [self._embedding(f) for f in self.bag_fields(side)],
                "num_dense": len(self.dense_fields(side)),
            }
        return layout

    def _embedding(self, fld: Field) -> dict:
        cardinality = self.cardinality(fld.name)
        dim = 0 if not fld.deep else (fld.embedding_dim or default_embedding_dim(cardinality))
        return {"name": fld.name, "num_embeddings": cardinality, "dim": dim}

    # --------------------------------------------------------------------- fit
    @classmethod
    def fit(
        cls,
        fields: list[Field],
        crosses: list[Cross],
        train: pd.DataFrame,
        users: pd.DataFrame,
        items: pd.DataFrame,
    ) -> FeatureSpec:
        """Learn vocabularies and statistics from the entities that occur in ``train``.

        ``users`` / ``items`` are entity tables (id column plus feature columns; users also
        carry the ``history`` column when a history field is declared).
        """
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names must be unique, got {names}")
        for cross in crosses:
            unknown = [n for n in cross.fields if n not in names]
            if unknown:
                raise ValueError(f"cross {cross.fields}: unknown feature {unknown[0]!r}; declared features are {names}")
            dense = [f.name for f in fields if f.name in cross.fields and f.is_dense]
            if dense:  # a standardized number has no index to cross; assemble would fail on the first batch
                raise ValueError(
                    f"cross {cross.fields}: feature {dense[0]!r} is a standardized number; "
                    "cross it as transform: bucketize"
                )
        tables = {
            "user": users[users[USER_ID].isin(train[USER_ID].unique())],
            "item": items[items[ITEM_ID].isin(train[ITEM_ID].unique())],
        }
        vocabularies: dict[str, list[str]] = {}
        numeric_stats: dict[str, list[float]] = {}
        for fld in fields:
            if fld.kind == "history":  # reuses the item id vocabulary
                continue
            table = tables[fld.side]
            column = _column(table, fld, "training entities")
            if fld.kind == "categorical":
                vocabularies[fld.name] = _vocabulary(_as_strings(column), fld.min_count)
            elif fld.kind == "multi_hot":
                flat = pc.list_flatten(_as_lists(column, fld)).to_pandas()
                vocabularies[fld.name] = _vocabulary(flat, fld.min_count)
            else:
                numeric_stats[fld.name] = _numeric_stats(_as_float(column, fld), fld)
        return cls(fields, crosses, vocabularies, numeric_stats)

    # ---------------------------------------------------------------- encode
    def encode(self, side: Side, table: pd.DataFrame) -> SideTensors:
        """Rows of a users or items table → tensors (vectorised, one pass per column).

        Missing feature columns encode as unknown (OOV index, mean value, empty bag), which
        is how a cold-start user with partial features is scored.
        """
        n = len(table)
        categorical = torch.zeros((n, len(self.categorical_fields(side))), dtype=torch.long)
        for j, fld in enumerate(self.categorical_fields(side)):
            if fld.column in table.columns:
                categorical[:, j] = torch.from_numpy(self._index_of(fld, table[fld.column]))
        dense = torch.zeros((n, len(self.dense_fields(side))), dtype=torch.float32)
        for j, fld in enumerate(self.dense_fields(side)):
            if fld.column in table.columns:
                mean, std = self.numeric_stats[fld.name]
                values = (_as_float(table[fld.column], fld) - mean) / std
                dense[:, j] = torch.from_numpy(np.nan_to_num(values, nan=0.0).astype(np.float32))
        bags = {
            fld.name: self._encode_bag(fld, table[fld.column] if fld.column in table.columns else None, n)
            for fld in self.bag_fields(side)
        }
        return SideTensors(categorical, dense, bags)

    @property
    def history_length(self) -> int:
        """The longest declared history (0 when there is none)."""
        return max((f.max_length for f in self.fields if f.kind == "history"), default=0)

    def item_index(self, item_ids: pd.Series) -> np.ndarray:
        """Item-id vocabulary indices (0 = unknown), the values history bags hold."""
        return self._index_of(self.item_id_field, item_ids)

    def _index_of(self, fld: Field, column: pd.Series) -> np.ndarray:
        if fld.kind == "numeric":
            values = _as_float(column, fld)
            index = np.searchsorted(np.asarray(self.numeric_stats[fld.name]), values, side="right") + 1
            return np.where(np.isnan(values), 0, index).astype(np.int64)
        return self._lookups[fld.name].get_indexer(_as_strings(column)).astype(np.int64) + 1  # -1 (OOV) -> 0

    def _encode_bag(self, fld: Field, column: pd.Series | None, n: int) -> Tensor:
        if column is None:
            return torch.zeros((n, 1), dtype=torch.long)
        lists = _as_lists(column, fld)
        lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        # Looked up in Arrow: a history table holds every training interaction (10M strings at scale).
        found = pc.index_in(pc.list_flatten(lists), value_set=self.vocabulary_array(self._vocabulary_name(fld)))
        values = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1  # missing -> 0
        rows = np.repeat(np.arange(n), lengths)
        ends = np.cumsum(lengths)
        # Position counted from the end for history (keep the most recent), else from the start.
        if fld.kind == "history":
            position = np.repeat(ends, lengths) - 1 - np.arange(len(values))
        else:
            position = np.arange(len(values)) - np.repeat(ends - lengths, lengths)
        keep = (position < fld.max_length) & (values > 0)
        width = max(1, min(fld.max_length, int(lengths.max(initial=0))))
        bag = np.zeros((n, width), dtype=np.int64)
        bag[rows[keep], position[keep]] = values[keep]
        return torch.from_numpy(bag)

    # --------------------------------------------------------------- assemble
    def assemble(self, user: SideTensors, item: SideTensors, history: Tensor | None = None) -> dict[str, Tensor]:
        """Model inputs for rows ``user[i]`` × ``item[i]`` (a user side of 1 row broadcasts).

        Runs in torch on whatever device the tensors live on, so batches can be built on
        the GPU, and is the only place where wide ids and crosses are computed.

        ``history`` (B, L), item-vocabulary indices oldest first, replaces the users' stored
        history for each row: in training, what the user had done *before* that interaction
        (the paper's apps installed at impression time). Without it, the stored history (all
        training positives, as at serving time) is used.
        """
        if history is not None:
            user = self.with_history(user, history)
        user = self._without_candidate(user, item)
        batch: dict[str, Tensor] = {}
        for side, tensors in (("user", user), ("item", item)):
            batch.update(tensors.as_batch(side))
            batch[f"wide.{side}"] = self._wide_ids(side, tensors)
        rows = max(len(user), len(item))
        crosses = [self._cross_ids(cross, user, item) for cross in self.crosses]
        batch["wide.cross"] = (
            torch.cat([c.expand(rows, -1) for c in crosses], dim=1)
            if crosses
            else torch.zeros((rows, 0), dtype=torch.long, device=item.categorical.device)
        )
        return batch

    def with_history(self, user: SideTensors, history: Tensor) -> SideTensors:
        """``user`` with the history ``history`` (B, L), item indices oldest first, in place of its stored
        one: each history field keeps the last ``max_length``. A training row or an evaluated user
        looks back from its own moment (:class:`~wdrec.data.timeline.Timeline`)."""
        return user.with_bags({f.name: history[:, -f.max_length :] for f in self.history_fields()})

    def blank(self, side: Side) -> SideTensors:
        """One entity with no known feature (what :meth:`encode` makes of an empty row): it crosses
        nothing, so a batch against it holds the other side's own ids and embeddings."""
        return SideTensors(
            torch.zeros((1, len(self.categorical_fields(side))), dtype=torch.long),
            torch.zeros((1, len(self.dense_fields(side))), dtype=torch.float32),
            {f.name: torch.zeros((1, 1), dtype=torch.long) for f in self.bag_fields(side)},
        )

    def field_values(self, name: str, tensors: SideTensors) -> Tensor:
        """A categorical or bag field's indices from its side's tensors: (rows, L), 0 = missing."""
        fld = self._by_name[name]
        if fld.is_bag:
            return tensors.bags[name]
        column = self.categorical_fields(fld.side).index(fld)
        return tensors.categorical[:, column : column + 1]

    def _values(self, name: str, user: SideTensors, item: SideTensors) -> Tensor:
        return self.field_values(name, user if self._by_name[name].side == "user" else item)

    def _without_candidate(self, user: SideTensors, item: SideTensors) -> SideTensors:
        """History minus the candidate item: a positive must not see itself in its features."""
        histories = [f.name for f in self.history_fields()]
        if not histories:
            return user
        candidate = self._values(self.item_id_field.name, user, item)  # (B, 1)
        return user.with_bags({name: user.bags[name].masked_fill(user.bags[name] == candidate, 0) for name in histories})

    def _wide_ids(self, side: Side, tensors: SideTensors) -> Tensor:
        parts = []
        for j, fld in enumerate(self.categorical_fields(side)):
            if fld.wide:
                parts.append(tensors.categorical[:, j : j + 1] + self.wide_offsets[fld.name])
        for fld in self.bag_fields(side):
            if fld.wide:
                bag = tensors.bags[fld.name]
                parts.append((bag + self.wide_offsets[fld.name]).masked_fill_(bag == 0, 0))
        if not parts:
            return torch.zeros((len(tensors), 0), dtype=torch.long, device=tensors.categorical.device)
        # A one-row user side meets a history already masked per candidate (B rows): broadcast.
        rows = max(p.shape[0] for p in parts)
        return torch.cat([p.expand(rows, -1) for p in parts], dim=1)

    def _cross_ids(self, cross: Cross, user: SideTensors, item: SideTensors) -> Tensor:
        """Wide ids of every value pair of the two fields, (B, La * Lb), 0 where either is missing.

        Each value's code comes from :meth:`cross_table`, so the (B, L) tensors cost one gather
        each and the (B, La, Lb) product one addition and the wrap.
        """
        a = self._values(cross.fields[0], user, item)  # (Ba, La)
        b = self._values(cross.fields[1], user, item)  # (Bb, Lb)
        return self.cross_table(cross, a.device).ids(a.unsqueeze(2), b.unsqueeze(1)).flatten(1)  # (B, La * Lb)

    def cross_table(self, cross: Cross, device: torch.device | str = "cpu") -> CrossTable:
        """The cross's per-value codes (:class:`CrossTable`). Cached per device: serving decomposes
        crosses with the same tables."""
        key = (cross.name, str(device))
        if key not in self._cross_tables:
            size, offset = self.cross_sizes[cross.name], self.wide_offsets[cross.name]
            a = torch.arange(self.cardinality(cross.fields[0]), dtype=torch.long)
            b = torch.arange(self.cardinality(cross.fields[1]), dtype=torch.long)
            if self._cross_is_exact(cross):
                left, right = (a - 1) * (len(b) - 1), b - 1
            else:
                left, right = torch.remainder(a * _P1, size), torch.remainder(b * _P2, size)
            left, right = torch.where(a > 0, left, 2 * size), torch.where(b > 0, right, 2 * size)
            self._cross_tables[key] = CrossTable(left.to(device), right.to(device), offset, size)
        return self._cross_tables[key]

    def _cross_is_exact(self, cross: Cross) -> bool:
        first, second = (self.cardinality(name) - 1 for name in cross.fields)
        return first * second <= self.cross_sizes[cross.name]

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "fields": [asdict(f) for f in self.fields],
            "crosses": [asdict(c) for c in self.crosses],
            "vocabularies": self.vocabularies,
            "numeric_stats": self.numeric_stats,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"FeatureSpec format_version {data.get('format_version')!r}; this wdrec reads {FORMAT_VERSION}")
        return cls(
            [Field(**f) for f in data["fields"]],
            [Cross(**c) for c in data["crosses"]],
            data["vocabularies"],
            data["numeric_stats"],
        )

    def save(self, path: Path) -> Path:
        return atomic_write_text(Path(path), json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> FeatureSpec:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureSpec) and self.to_dict() == other.to_dict()


# ---------------------------------------------------------------------- helpers
def _column(table: pd.DataFrame, fld: Field, origin: str) -> pd.Series:
    if fld.column not in table.columns:
        raise DataError(
            f"{fld.side}s table ({origin})",
            fld.column,
            f"missing; feature {fld.name!r} reads it. Columns found: {list(table.columns)}",
        )
    return table[fld.column]


def _as_strings(column: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(column) and np.all(np.mod(column.dropna().to_numpy(), 1) == 0):
        column = column.astype("Int64")  # 24.0 and 24 are one category
    return column.astype("str")


def _as_float(column: pd.Series, fld: Field) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        raise DataError(f"{fld.side}s table", fld.column, f"numeric feature {fld.name!r} expects numbers, found {column[bad].iloc[0]!r}")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _as_lists(column: pd.Series, fld: Field) -> pa.Array:
    try:
        array = arrow_column(column)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise DataError(f"{fld.side}s table", fld.column, f"multi-valued feature {fld.name!r} expects lists: {error}") from None
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        raise DataError(f"{fld.side}s table", fld.column, f"multi-valued feature {fld.name!r} expects lists, found {array.type}")
    return array.cast(pa.list_(pa.string()))


def _vocabulary(values: pd.Series, min_count: int) -> list[str]:
    counts = values.dropna().astype("str").value_counts()
    return sorted(counts.index[counts >= min_count].tolist())


def _numeric_stats(values: np.ndarray, fld: Field) -> list[float]:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        raise DataError(f"{fld.side}s table", fld.column, f"numeric feature {fld.name!r} has no values in the training split")
    if fld.transform == "standardize":
        std = float(finite.std())
        return [float(finite.mean()), std if std > 0 else 1.0]
    if fld.boundaries is not None:
        return sorted(float(b) for b in fld.boundaries)
    quantiles = np.quantile(finite, np.linspace(0, 1, fld.num_buckets + 1)[1:-1])
    return np.unique(quantiles).tolist()
