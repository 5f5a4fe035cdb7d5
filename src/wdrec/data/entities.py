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
from wdrec.data.schema import ITEM_ID, LABEL, SEEN_COLUMN, TIMESTAMP, USER_ID, DataError, InteractionData
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
DAY_S = 86_400


def with_training_statistics(frame: pd.DataFrame, side: Side, fields: list[Field], train: pd.DataFrame) -> pd.DataFrame:
    """The ``side``'s entity ``frame`` plus a column per ``statistic`` field of that side, from the
    training rows of each of its entities:

    - ``count``: log(1 + rows);
    - ``label_mean``: the mean label or rating, shrunk towards the global mean by :data:`PRIOR_ROWS`;
    - ``mean_time``: the mean time of the rows, in days since 1970 (needs timestamps).

    An entity without training rows gets the global mean. A training row's own label is among
    those averaged: validation decided that the shrinkage was enough (docs/architecture.md)."""
    wanted = [f for f in fields if f.statistic is not None and f.side == side]
    if not wanted:
        return frame
    if TIMESTAMP not in train.columns and (timed := [f.name for f in wanted if f.statistic == "mean_time"]):
        raise DataError("the interactions", TIMESTAMP, f"feature {timed[0]!r} (statistic mean_time) needs timestamps")
    id_column = USER_ID if side == "user" else ITEM_ID
    codes = pd.Index(frame[id_column]).get_indexer(train[id_column])
    known = codes >= 0
    rows = np.bincount(codes[known], minlength=len(frame))

    def shrunk_mean(values: np.ndarray, prior_rows: int) -> np.ndarray:
        """Each entity's mean of ``values`` over its rows, with ``prior_rows`` more at the global mean."""
        values = values[known]
        prior = values.mean() if len(values) else 0.0
        sums = np.bincount(codes[known], weights=values, minlength=len(frame)) + prior_rows * prior
        weight = rows + prior_rows
        return np.divide(sums, weight, out=np.full(len(frame), prior), where=weight > 0)

    columns = {}
    for f in wanted:
        if f.statistic == "count":
            columns[f.column] = np.log1p(rows)
        elif f.statistic == "label_mean":
            columns[f.column] = shrunk_mean(train[LABEL].to_numpy(dtype=np.float64), PRIOR_ROWS)
        else:
            columns[f.column] = shrunk_mean(train[TIMESTAMP].to_numpy(dtype=np.float64) / DAY_S, 0)
    return frame.assign(**{name: values.astype(np.float32) for name, values in columns.items()})


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
