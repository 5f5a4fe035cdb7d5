"""Recommendations and scores for one user, on numpy/torch arrays prepared at load time.

No pandas on the request path: the catalogue's ids, display fields and filterable columns
are turned into arrays and Python lists once, when the model is loaded (:class:`Catalogue`).
A request scores the user against the whole catalogue (or the given candidates) in one
batched pass, blanks out what it may not return (seen, excluded, filtered) and takes the
top K with ``torch.topk``, ties broken by catalogue order (candidates: request order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from wdrec.data.features import SideTensors
from wdrec.data.schema import ITEM_ID, USER_ID
from wdrec.export.scorer import UnknownItemsError

if TYPE_CHECKING:
    from serving.model_store import LoadedModel

Scalar = str | int | float | bool | None


class RequestError(ValueError):
    """Bad input that only the model can judge (unknown ids, features, filters): a 4xx naming the field."""

    def __init__(self, field: str, message: str, status: int = 422, **extra: Any) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status, self.extra = field, message, status, extra


# ------------------------------------------------------------------ catalogue
@dataclass
class _Column:
    kind: str  # "list" (contains), "string", "number", "bool" (equals)
    values: np.ndarray  # one per item; list columns: the flattened values
    parents: np.ndarray | None = None  # list columns: the item row of each flattened value


class Catalogue:
    """The items table as arrays: ids, display fields, and per-column filter masks (cached)."""

    def __init__(self, items: pd.DataFrame, mask_cache: int = 256) -> None:
        self.size = len(items)
        self.ids: list[str] = items[ITEM_ID].astype("str").tolist()
        self.row_of: dict[str, int] = {item: row for row, item in enumerate(self.ids)}
        self.display: dict[str, list[Any]] = {}
        self.columns: dict[str, _Column] = {}
        for name in items.columns:
            if name == ITEM_ID:
                continue
            prepared = _prepare_column(items[name])
            if prepared is not None:
                self.display[name], self.columns[name] = prepared
        self._display_items = list(self.display.items())
        self.mask = lru_cache(maxsize=mask_cache)(self._mask)  # (column, value) -> bool mask, built on first use

    def rows(self, ids: Sequence[str], field: str) -> Tensor:
        """Catalogue rows of ``ids``, in order; unknown ids are a 422 naming the field and the ids."""
        row_of = self.row_of
        rows = [row_of.get(i, -1) for i in ids]
        if -1 in rows:
            unknown = list(dict.fromkeys(i for i, r in zip(ids, rows, strict=True) if r < 0))
            raise RequestError(field, str(UnknownItemsError(unknown)), unknown_ids=unknown[:100])
        return torch.tensor(rows, dtype=torch.long)

    def fields(self, row: int) -> dict[str, Any]:
        return {name: values[row] for name, values in self._display_items}

    def filter_mask(self, filters: Mapping[str, Scalar | Sequence[Scalar]]) -> Tensor | None:
        """Items every filter accepts (a filter's list of values: any of them), or None for no filter."""
        combined = None
        for name, wanted in filters.items():
            if name not in self.columns:
                raise RequestError(f"filters.{name}", f"no such item column; filterable columns: {sorted(self.columns)}")
            values = wanted if isinstance(wanted, list) else [wanted]
            if not values:
                raise RequestError(f"filters.{name}", "give a value or a non-empty list of values")
            mask = None
            for value in values:
                one = self.mask(name, self._normalise(name, value))
                mask = one if mask is None else mask | one
            combined = mask if combined is None else combined & mask
        return combined

    def _normalise(self, name: str, value: Scalar) -> Any:
        kind = self.columns[name].kind
        if value is None or isinstance(value, list):
            raise RequestError(f"filters.{name}", "values must be strings or numbers")
        if kind == "number":
            try:
                number = float(value)
            except ValueError:
                raise RequestError(f"filters.{name}", f"a numeric column; {value!r} is not a number") from None
            if not math.isfinite(number):
                raise RequestError(f"filters.{name}", "a numeric column takes finite numbers")
            return number
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text not in ("true", "false"):
                raise RequestError(f"filters.{name}", f"a true/false column; got {value!r}")
            return text == "true"
        return _text(value)

    def _mask(self, name: str, value: Any) -> Tensor:
        column = self.columns[name]
        mask = np.zeros(self.size, dtype=bool)
        if column.kind == "list":
            mask[column.parents[column.values == value]] = True
        else:
            mask = column.values == value
        return torch.from_numpy(np.asarray(mask, dtype=bool))


def _text(value: Scalar) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _prepare_column(series: pd.Series) -> tuple[list[Any], _Column] | None:
    """JSON-friendly display values plus a filter column, or None for a column that is neither."""
    if isinstance(series.dtype, pd.ArrowDtype) and pa.types.is_list(series.dtype.pyarrow_dtype):
        array = pa.array(series, from_pandas=True)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        value_type = array.type.value_type
        if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type) or pa.types.is_integer(value_type)):
            return None
        flat = pc.list_flatten(array).cast(pa.string())
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False).astype(np.int64)
        values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=object)
        display = [None if v is None else [str(x) for x in v] for v in array.to_pylist()]
        return display, _Column("list", values, parents)
    if pd.api.types.is_bool_dtype(series.dtype):
        values = series.to_numpy(dtype=bool, na_value=False)
        return [None if pd.isna(v) else bool(v) for v in series.tolist()], _Column("bool", values)
    if pd.api.types.is_numeric_dtype(series.dtype):
        numbers = series.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = numbers[np.isfinite(numbers)]
        integral = bool(np.all(np.mod(finite, 1) == 0))
        display = [None if not math.isfinite(v) else (int(v) if integral else float(v)) for v in numbers.tolist()]
        return display, _Column("number", numbers)
    if pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
        objects = series.tolist()
        if not all(v is None or isinstance(v, str) or (isinstance(v, float) and math.isnan(v)) for v in objects):
            return None
        display = [v if isinstance(v, str) else None for v in objects]
        return display, _Column("string", np.asarray(display, dtype=object))
    return None


# ----------------------------------------------------------------------- users
def user_side(model: LoadedModel, user_id: str, features: Mapping[str, Any] | None) -> tuple[SideTensors, int | None, Tensor]:
    """The user's encoded features, its row (None: cold start) and the catalogue rows it has seen."""
    scorer = model.scorer
    row = model.user_row.get(user_id)
    if row is not None:
        return scorer.users.take(torch.tensor([row])), row, scorer.seen_rows(row)
    if not features:
        return model.blank_user, None, torch.zeros(0, dtype=torch.long)
    return _cold_start(model, features), None, _history_rows(model, features)


def _cold_start(model: LoadedModel, features: Mapping[str, Any]) -> SideTensors:
    spec = model.scorer.spec
    fields = {f.column: f for f in spec.side_fields("user") if f.column != USER_ID}
    unknown = sorted(set(features) - set(fields))
    if unknown:
        raise RequestError("user_features", f"unknown feature(s) {unknown}; this model reads {sorted(fields)}")
    raw: dict[str, Any] = {}
    for column, value in features.items():
        if fields[column].is_bag:
            raw[column] = [] if value is None else [_text(v) for v in (value if isinstance(value, list) else [value])]
        elif isinstance(value, list):
            raise RequestError(f"user_features.{column}", "takes one value, not a list")
        else:
            raw[column] = value
    try:
        return model.scorer.encode_user_features(raw)
    except (ValueError, TypeError, pa.ArrowException) as error:
        column = getattr(error, "column", None)
        field = f"user_features.{column}" if column else "user_features"
        message = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RequestError(field, message) from None


def _history_rows(model: LoadedModel, features: Mapping[str, Any]) -> Tensor:
    """Catalogue rows of a cold-start user's given history (they count as seen)."""
    rows: set[int] = set()
    for fld in model.scorer.spec.bag_fields("user"):
        value = features.get(fld.column)
        if fld.kind == "history" and value:
            ids = [_text(v) for v in (value if isinstance(value, list) else [value])]
            rows.update(model.catalogue.row_of[i] for i in ids if i in model.catalogue.row_of)
    return torch.tensor(sorted(rows), dtype=torch.long)


# -------------------------------------------------------------------- requests
@dataclass
class Recommendation:
    user_id: str
    items: list[dict[str, Any]]
    cold_start: bool
    model_version: str | None


def recommend(
    model: LoadedModel,
    user_id: str,
    k: int,
    exclude_seen: bool = True,
    candidates: Sequence[str] | None = None,
    user_features: Mapping[str, Any] | None = None,
    exclude_items: Sequence[str] | None = None,
    filters: Mapping[str, Scalar | Sequence[Scalar]] | None = None,
) -> Recommendation:
    """Top ``k`` items for ``user_id`` by score, descending; fewer when fewer remain.

    Scored: the given ``candidates``, else the retriever's candidates (two-stage), else the
    whole catalogue.
    """
    rows = None
    if candidates is not None:
        rows = model.catalogue.rows(list(dict.fromkeys(candidates)), "candidates")  # first occurrence kept
    excluded = model.catalogue.rows(exclude_items, "exclude_items") if exclude_items else None
    allowed = model.catalogue.filter_mask(filters) if filters else None
    user, row, seen = user_side(model, user_id, user_features)

    blocked = None  # catalogue rows that may not be returned
    if (exclude_seen and len(seen)) or excluded is not None:
        blocked = torch.zeros(model.catalogue.size, dtype=torch.bool)
        if exclude_seen:
            blocked[seen] = True
        if excluded is not None:
            blocked[excluded] = True
    if allowed is not None:
        blocked = ~allowed if blocked is None else blocked | ~allowed
    if rows is None and model.retriever is not None:
        rows = model.retriever.candidates(seen, blocked, minimum=k)
    scores = model.score(user, rows, row, blocked)  # (N,) or (len(rows),)
    if blocked is not None:
        scores = scores.masked_fill(blocked if rows is None else blocked[rows], -math.inf)
    order = top_k(scores, k)
    picked = order.tolist() if rows is None else rows[order].tolist()
    values = scores[order].tolist()
    catalogue = model.catalogue
    ids = catalogue.ids
    items = [{"item_id": ids[r], "score": s, **catalogue.fields(r)} for r, s in zip(picked, values, strict=True)]
    return Recommendation(user_id, items, row is None, model.info.version)


def top_k(scores: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` best finite scores, best first, equal scores in position order."""
    k = min(k, len(scores))
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    threshold = torch.topk(scores, k, sorted=False).values.min()
    if threshold == -math.inf:
        contenders = torch.nonzero(scores > -math.inf).squeeze(1)
    else:
        contenders = torch.nonzero(scores >= threshold).squeeze(1)  # ascending positions; ties past k included
    ranked = torch.sort(scores[contenders], descending=True, stable=True).indices[:k]
    return contenders[ranked]


def score(
    model: LoadedModel, user_id: str, item_ids: Sequence[str], user_features: Mapping[str, Any] | None = None
) -> tuple[list[float], bool]:
    """Scores for ``item_ids`` in request order, and whether the user was a cold start."""
    rows = model.catalogue.rows(item_ids, "item_ids")
    user, row, _ = user_side(model, user_id, user_features)
    values = model.score(user, rows, row) if len(rows) else torch.zeros(0)
    return values.tolist(), row is None
