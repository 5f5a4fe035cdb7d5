"""The canonical tables every source yields, and the checks that guard them.

Every source (MovieLens, the user's files, the synthetic generator) turns its input into
one :class:`InteractionData`: an interactions table plus optional user and item tables.
Everything downstream (splits, the FeatureSpec, the bundle) reads only these columns, so
a new source needs nothing but a loader.

Conventions:
- ids are strings (``str`` dtype), as on the wire: ``196`` and ``"196"`` are one user;
- ``rating`` is float, ``label`` is 0/1, ``timestamp`` is int64 seconds; each optional;
- multi-valued features (genres) are pyarrow ``list<string>`` columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
LABEL = "label"
TIMESTAMP = "timestamp"
SEEN_COLUMN = "seen"  # the users table's list of every item a user interacted with (bundles, serving)

STRING_LIST = pd.ArrowDtype(pa.list_(pa.string()))


class DataError(ValueError):
    """Bad input data: the message names the file, the column and what was expected."""

    def __init__(self, origin: str, column: str | None, problem: str) -> None:
        where = f"{origin}: column '{column}'" if column else origin
        super().__init__(f"{where}: {problem}")
        self.origin, self.column, self.problem = origin, column, problem


@dataclass
class InteractionData:
    """Interaction log with optional side tables, in canonical form.

    ``origins`` maps each table name to where it came from (a path), for error messages.
    ``predefined`` holds ready-made ``train``/``val``/``test`` interaction tables when the
    user supplied their own split.
    """

    interactions: pd.DataFrame
    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    predefined: dict[str, pd.DataFrame] | None = None
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def has_ratings(self) -> bool:
        return RATING in self.interactions.columns

    @property
    def has_labels(self) -> bool:
        return LABEL in self.interactions.columns

    @property
    def has_timestamps(self) -> bool:
        return TIMESTAMP in self.interactions.columns

    def summary(self) -> dict[str, object]:
        """Counts a person checks first: sizes, density, rating and time ranges."""
        log = self.interactions
        n_users, n_items = log[USER_ID].nunique(), log[ITEM_ID].nunique()
        out: dict[str, object] = {
            "interactions": len(log),
            "users": n_users,
            "items": n_items,
            "density": round(len(log) / max(n_users * n_items, 1), 6),
            "user_features": [] if self.users is None else [c for c in self.users.columns if c != USER_ID],
            "item_features": [] if self.items is None else [c for c in self.items.columns if c != ITEM_ID],
        }
        if self.has_ratings:
            out["rating_mean"] = round(float(log[RATING].mean()), 4)
            out["rating_counts"] = {str(k): int(v) for k, v in log[RATING].value_counts().sort_index().items()}
        if self.has_timestamps:
            out["time_range"] = [
                pd.Timestamp(int(log[TIMESTAMP].min()), unit="s").isoformat(),
                pd.Timestamp(int(log[TIMESTAMP].max()), unit="s").isoformat(),
            ]
        return out


def as_ids(values: pd.Series, origin: str, column: str) -> pd.Series:
    """Ids as strings; integers become their decimal text; missing ids are an error."""
    if values.isna().any():
        rows = np.flatnonzero(values.isna().to_numpy())[:5].tolist()
        raise DataError(origin, column, f"{int(values.isna().sum())} missing ids (rows {rows}); every row needs an id")
    if pd.api.types.is_float_dtype(values):
        if not np.all(np.mod(values.to_numpy(), 1) == 0):
            raise DataError(origin, column, "ids must be strings or integers, found fractional numbers")
        values = values.astype("int64")
    out = values.astype("str")
    if (out.str.len() == 0).any():
        raise DataError(origin, column, "empty id strings; every row needs an id")
    return out


def as_numbers(values: pd.Series, origin: str, column: str, dtype: str = "float64") -> pd.Series:
    """Numeric column or a DataError that shows an offending value."""
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna() & values.notna()
    if bad.any():
        example = values[bad].iloc[0]
        raise DataError(origin, column, f"expected numbers, found {example!r} ({int(bad.sum())} such rows)")
    if converted.isna().any():
        raise DataError(origin, column, f"{int(converted.isna().sum())} missing values; expected a number in every row")
    return converted.astype(dtype)


def require_columns(frame: pd.DataFrame, columns: list[str], origin: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(origin, missing[0], f"missing; expected columns {columns}, found {list(frame.columns)}")


def canonical_interactions(
    frame: pd.DataFrame, origin: str, on_duplicate: str = "error"
) -> pd.DataFrame:
    """Check and convert an interactions table that already uses canonical column names.

    ``on_duplicate``: ``error`` (default) refuses rows repeated on (user, item, timestamp),
    ``drop`` keeps the first, ``keep`` keeps them all (repeat consumption).
    """
    if frame.empty:
        raise DataError(origin, None, "no interactions: the table is empty")
    require_columns(frame, [USER_ID, ITEM_ID], origin)
    out = pd.DataFrame(
        {USER_ID: as_ids(frame[USER_ID], origin, USER_ID), ITEM_ID: as_ids(frame[ITEM_ID], origin, ITEM_ID)}
    )
    if RATING in frame.columns:
        out[RATING] = as_numbers(frame[RATING], origin, RATING)
    if LABEL in frame.columns:
        labels = as_numbers(frame[LABEL], origin, LABEL)
        if not labels.isin([0.0, 1.0]).all():
            raise DataError(origin, LABEL, f"expected 0/1 labels, found {sorted(labels.unique())[:5]}")
        out[LABEL] = labels.astype("float32")
    if TIMESTAMP in frame.columns:
        out[TIMESTAMP] = _as_seconds(frame[TIMESTAMP], origin)
    key = [c for c in (USER_ID, ITEM_ID, TIMESTAMP) if c in out.columns]
    # Integer codes: duplicated() on three string columns is ~10x slower on large logs.
    codes = pd.DataFrame({c: pd.factorize(out[c])[0] if c != TIMESTAMP else out[c] for c in key})
    duplicated = codes.duplicated()
    if duplicated.any():
        if on_duplicate == "error":
            first = out[duplicated].iloc[0]
            raise DataError(
                origin,
                None,
                f"{int(duplicated.sum())} duplicate interactions on {key} (first: user {first[USER_ID]!r}, "
                f"item {first[ITEM_ID]!r}); set on_duplicate: drop to keep the first of each",
            )
        if on_duplicate == "drop":
            out = out[~duplicated]
        elif on_duplicate != "keep":
            raise ValueError(f"on_duplicate must be 'error', 'drop' or 'keep', got {on_duplicate!r}")
    return out.reset_index(drop=True)


def _as_seconds(values: pd.Series, origin: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        if values.isna().any():
            raise DataError(origin, TIMESTAMP, f"{int(values.isna().sum())} missing timestamps")
        return (values.astype("datetime64[s]").astype("int64")).rename(TIMESTAMP)
    numbers = pd.to_numeric(values, errors="coerce")
    if pd.api.types.is_numeric_dtype(values) or numbers.notna().all():
        return as_numbers(values, origin, TIMESTAMP).astype("int64")
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    if parsed.isna().any():
        example = values[parsed.isna()].iloc[0]
        raise DataError(origin, TIMESTAMP, f"expected epoch seconds or ISO dates, found {example!r}")
    return parsed.dt.tz_localize(None).astype("datetime64[s]").astype("int64")


def canonical_side_table(frame: pd.DataFrame, id_column: str, origin: str) -> pd.DataFrame:
    """A users or items table keyed by unique string ids."""
    if frame.empty:
        raise DataError(origin, None, "the table is empty")
    require_columns(frame, [id_column], origin)
    out = frame.copy()
    out[id_column] = as_ids(frame[id_column], origin, id_column)
    repeated = out[id_column].duplicated()
    if repeated.any():
        raise DataError(
            origin, id_column, f"ids must be unique, found {int(repeated.sum())} repeats (first: {out[id_column][repeated].iloc[0]!r})"
        )
    return out.reset_index(drop=True)


def split_strings(values: pd.Series, separator: str) -> pd.Series:
    """``"Action|Comedy"`` → ``["Action", "Comedy"]`` as a pyarrow list column; missing → []."""
    import pyarrow.compute as pc

    arrow = pa.array(values.fillna("").astype("str").to_numpy(dtype=object), type=pa.string())
    lists = _drop_empty(pc.split_pattern(arrow, pattern=separator))
    return pd.Series(pd.arrays.ArrowExtensionArray(lists), index=values.index, name=values.name)


def _drop_empty(lists: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    flat = pc.list_flatten(lists)
    keep = pc.not_equal(flat, "")
    parents = pc.list_parent_indices(lists)
    kept_parents = pc.filter(parents, keep).to_numpy(zero_copy_only=False)
    counts = np.bincount(kept_parents, minlength=len(lists)) if len(kept_parents) else np.zeros(len(lists), int)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype("int32")
    return pa.ListArray.from_arrays(pa.array(offsets), pc.filter(flat, keep))
