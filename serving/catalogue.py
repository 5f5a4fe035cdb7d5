"""The catalogue as arrays, prepared once per loaded model: no pandas on the request path.

Ids, display fields and filterable columns are turned into arrays and Python lists when
the model is loaded; a filter's mask is built on first use and cached.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from wdrec.data.schema import ITEM_ID
from wdrec.export.scorer import UnknownItemsError

Scalar = str | int | float | bool | None


class RequestError(ValueError):
    """Bad input that only the model can judge (unknown ids, features, filters): a 4xx naming the field."""

    def __init__(self, field: str, message: str, status: int = 422, **extra: Any) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status, self.extra = field, message, status, extra


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
        return as_text(value)

    def _mask(self, name: str, value: Any) -> Tensor:
        column = self.columns[name]
        mask = np.zeros(self.size, dtype=bool)
        if column.kind == "list":
            mask[column.parents[column.values == value]] = True
        else:
            mask = column.values == value
        return torch.from_numpy(np.asarray(mask, dtype=bool))


def as_text(value: Scalar) -> str:
    """A JSON scalar as the text the model's tables hold (booleans as JSON spells them)."""
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
