"""Entity tables: every known user and catalogue item, as a bundle stores them.

A users table holds each user's features, ``history`` (training positives, oldest first)
and ``seen`` items; an items table each item's features. Ids named by the interactions but
missing from a side table get a row whose features are unknown; ids outside the tables
altogether (a stream's validation log) map to one extra all-unknown row of the encoded
tensors (:func:`with_unknown_row`, :func:`rows_of`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from wdrec.data.features import HISTORY_COLUMN, Field, Side, SideTensors
from wdrec.data.io import arrow_column
from wdrec.data.schema import ITEM_ID, LABEL, SEEN_COLUMN, TIMESTAMP, USER_ID, InteractionData
from wdrec.data.timeline import timeline_order


def entity_frame(table: pd.DataFrame | None, id_column: str, ids: pd.Series | pa.Array | None) -> pd.DataFrame:
    """The side table's ids, then the ``ids`` it lacks (features unknown), with its feature columns."""
    parts = ([] if table is None else [table[id_column]]) + ([] if ids is None else [pd.Series(ids, dtype="str")])
    frame = pd.DataFrame({id_column: pd.unique(pd.concat(parts, ignore_index=True)) if parts else []}, dtype="str")
    if table is not None:
        frame = frame.merge(table, on=id_column, how="left")
    return frame


def build_users_frame(data: InteractionData, positives: pd.DataFrame) -> pd.DataFrame:
    """Every known user with their features, training history (oldest first) and all seen items."""
    frame = entity_frame(data.users, USER_ID, data.interactions[USER_ID])
    ids = pd.Index(frame[USER_ID])
    times = positives[TIMESTAMP].to_numpy() if TIMESTAMP in positives.columns else None
    order = timeline_order(ids.get_indexer(positives[USER_ID]), times)
    frame[HISTORY_COLUMN] = lists_by_key(ids, positives[USER_ID], positives[ITEM_ID], order)
    frame[SEEN_COLUMN] = lists_by_key(ids, data.interactions[USER_ID], data.interactions[ITEM_ID])
    return frame


PRIOR_ROWS = 10  # label_mean: as if each user or item had this many more rows at the global mean


def with_training_statistics(frame: pd.DataFrame, side: Side, fields: list[Field], train: pd.DataFrame) -> pd.DataFrame:
    """The ``side``'s entity ``frame`` plus a column per ``statistic`` field of that side, from the
    training rows of each of its entities:
    ``count`` is log(1 + rows), ``label_mean`` the mean label shrunk towards the global mean by
    :data:`PRIOR_ROWS` (an entity without training rows gets the global mean). A training row's own
    label is among those averaged: validation decided that this smoothing was enough (docs/benchmarks.md)."""
    wanted = [f for f in fields if f.statistic is not None and f.side == side]
    if not wanted:
        return frame
    id_column = USER_ID if side == "user" else ITEM_ID
    codes = pd.Index(frame[id_column]).get_indexer(train[id_column])
    known = codes >= 0
    labels = train[LABEL].to_numpy(dtype=np.float64)[known]
    rows = np.bincount(codes[known], minlength=len(frame))
    sums = np.bincount(codes[known], weights=labels, minlength=len(frame))
    prior = labels.mean() if len(labels) else 0.0
    values = {"count": np.log1p(rows), "label_mean": (sums + PRIOR_ROWS * prior) / (rows + PRIOR_ROWS)}
    return frame.assign(**{f.column: values[f.statistic].astype(np.float32) for f in wanted})


def build_items_frame(data: InteractionData) -> pd.DataFrame:
    """The catalogue: every item of the items table or of the log, with its features."""
    return entity_frame(data.items, ITEM_ID, data.interactions[ITEM_ID])


def lists_by_key(keys: pd.Index, owners: pd.Series, values: pd.Series, order: np.ndarray | None = None) -> pd.Series:
    """One list per entry of ``keys`` of the ``values`` their ``owners`` hold, taken in ``order``."""
    codes = keys.get_indexer(owners)
    permutation = np.argsort(codes, kind="stable") if order is None else order
    counts = np.bincount(codes, minlength=len(keys))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    flat = arrow_column(values).cast(pa.string()).take(pa.array(permutation))
    array = pa.ListArray.from_arrays(pa.array(offsets), flat)
    return pd.Series(pd.arrays.ArrowExtensionArray(array), index=pd.RangeIndex(len(keys)))


def empty_lists(n: int) -> pd.Series:
    """``n`` empty ``list<string>`` values: a ``seen`` column nobody could fill."""
    array = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()))
    return pd.Series(pd.arrays.ArrowExtensionArray(array))


def with_unknown_row(tensors: SideTensors) -> SideTensors:
    """One more row, every feature unknown (OOV 0, mean 0, empty bags): for ids outside the tables."""

    def grow(t: Tensor) -> Tensor:
        return torch.cat([t, t.new_zeros((1, *t.shape[1:]))])

    return SideTensors(grow(tensors.categorical), grow(tensors.dense), {n: grow(b) for n, b in tensors.bags.items()})


def rows_of(index: pd.Index, ids: pa.Array) -> np.ndarray:
    """Entity rows of ``ids`` in ``index``; an unknown id gets the unknown row, ``len(index)``.

    Each distinct id of the block is looked up once (logs repeat ids heavily).
    """
    encoded = pc.dictionary_encode(ids)
    rows = index.get_indexer(pd.Series(encoded.dictionary, dtype="str")).astype(np.int64)
    rows[rows < 0] = len(index)
    return rows[encoded.indices.to_numpy(zero_copy_only=False)]
