"""The user's own interaction logs, as CSV or Parquet files named in the config.

Most people who bring their own data have a ratings/clicks export and perhaps a users and
an items table, each with its own column names. :class:`Files` only reads those files and
renames the configured columns to the canonical ones; every check (ids, numbers, labels,
timestamps, duplicates, unique side-table ids) is the one in :mod:`wdrec.data.schema`, so
a file and a built-in dataset are held to the same rules. Errors are reported under the
file's own path and column names. Its arguments are plain values, so a YAML config for the
Lightning CLI can set them:

.. code-block:: yaml

    data:
      source:
        class_path: wdrec.data.sources.files.Files
        init_args:
          interactions: ~/data/ratings.csv
          rating_column: stars
          items: ~/data/items.parquet
          multi_valued: {genres: "|"}
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from wdrec.data.io import read_parquet
from wdrec.data.schema import (
    ITEM_ID,
    LABEL,
    RATING,
    STRING_LIST,
    TIMESTAMP,
    USER_ID,
    DataError,
    InteractionData,
    canonical_interactions,
    canonical_side_table,
    require_columns,
    split_strings,
)
from wdrec.data.sources.base import InteractionSource

FORMATS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet"}
SPLITS = ("train", "val", "test")
ON_DUPLICATE = ("error", "drop", "keep")


class Files(InteractionSource):
    """Interactions (and optional users/items tables) from CSV or Parquet files.

    Args:
        interactions: the interaction log (``.csv``, ``.csv.gz`` or ``.parquet``); may be
            omitted when ``train`` is given, and is then train, val and test together.
        user_column, item_column: the id columns; ids are read as text (``7`` → ``"7"``).
        rating_column: explicit feedback (numbers). Only configured columns are read: a
            ``rating`` column in the file is ignored unless named here.
        label_column: 0/1 labels.
        timestamp_column: epoch seconds or ISO dates.
        users, items: side tables keyed by ``users_id_column`` / ``items_id_column``
            (default: ``user_column`` / ``item_column``); every other column is a feature.
        multi_valued: side-table columns holding several values, with their separator,
            e.g. ``{"genres": "|"}``; they become lists of strings (Parquet list columns
            are kept as lists).
        train, val, test: a ready-made split, each file shaped like ``interactions``.
        on_duplicate: ``error``, ``drop`` or ``keep`` repeated (user, item, timestamp) rows.
        csv_separator: the CSV field separator.

    Relative paths are taken from the working directory; ``~`` is expanded.
    """

    def __init__(
        self,
        interactions: str | None = None,
        user_column: str = "user_id",
        item_column: str = "item_id",
        rating_column: str | None = None,
        label_column: str | None = None,
        timestamp_column: str | None = None,
        users: str | None = None,
        users_id_column: str | None = None,
        items: str | None = None,
        items_id_column: str | None = None,
        multi_valued: dict[str, str] | None = None,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        on_duplicate: str = "error",
        csv_separator: str = ",",
    ) -> None:
        pairs = [(user_column, USER_ID), (item_column, ITEM_ID), (rating_column, RATING),
                 (label_column, LABEL), (timestamp_column, TIMESTAMP)]  # fmt: skip
        named = [(column, canonical) for column, canonical in pairs if column is not None]
        self.columns = dict(named)  # the file's column -> its canonical name
        if len(self.columns) != len(named):
            raise ValueError(f"Files: each column may be configured once, got {[c for c, _ in named]}")
        self.splits = {name: path for name, path in zip(SPLITS, (train, val, test), strict=True) if path}
        if interactions is None and train is None:
            raise ValueError("Files: give `interactions`, or a predefined split with at least `train`")
        if self.splits and train is None:
            raise ValueError(f"Files: a predefined split needs `train`, got only {sorted(self.splits)}")
        if on_duplicate not in ON_DUPLICATE:
            raise ValueError(f"Files: on_duplicate must be one of {ON_DUPLICATE}, got {on_duplicate!r}")
        if multi_valued and not (users or items):
            raise ValueError(f"Files: multi_valued {sorted(multi_valued)} needs a users or items table")
        for path in (interactions, users, items, *self.splits.values()):
            if path is not None:
                file_format(expand(path))
        self.interactions, self.users, self.items = interactions, users, items
        self.users_id_column = users_id_column or user_column
        self.items_id_column = items_id_column or item_column
        self.multi_valued = dict(multi_valued or {})
        self.on_duplicate, self.csv_separator = on_duplicate, csv_separator

    @property
    def name(self) -> str:
        return "files"

    @property
    def carries_split(self) -> bool:
        return bool(self.splits)

    def load(self, data_dir: Path | None = None) -> InteractionData:
        """Read the files (``data_dir`` is unused: the paths are the user's own)."""
        origins: dict[str, str] = {}
        predefined: dict[str, pd.DataFrame] = {}
        for split, split_path in self.splits.items():
            origins[split], predefined[split] = self._read_interactions(split_path)
        if self.interactions is not None:
            origins["interactions"], log = self._read_interactions(self.interactions)
        else:  # the whole log is the split's files together; a row in two of them is refused here
            origins["interactions"] = " + ".join(origins[s] for s in predefined)
            whole = pd.concat(predefined.values(), ignore_index=True)
            log = canonical_interactions(whole, origins["interactions"], self.on_duplicate)
        sides: dict[str, pd.DataFrame | None] = {"users": None, "items": None}
        for table, path, id_column, canonical in (
            ("users", self.users, self.users_id_column, USER_ID),
            ("items", self.items, self.items_id_column, ITEM_ID),
        ):
            if path is not None:
                origins[table], sides[table] = self._read_side(path, id_column, canonical)
        unknown = [c for c in self.multi_valued if all(f is None or c not in f for f in sides.values())]
        if unknown:
            found = "; ".join(f"{t}: {list(f.columns)}" for t, f in sides.items() if f is not None)
            where = " and ".join(origins[t] for t, f in sides.items() if f is not None)
            raise DataError(where, unknown[0], f"configured in multi_valued but in no table; found {found}")
        return InteractionData(log, sides["users"], sides["items"], predefined or None, origins)

    def _read_interactions(self, path: str) -> tuple[str, pd.DataFrame]:
        ids = [c for c, canonical in self.columns.items() if canonical in (USER_ID, ITEM_ID)]
        origin, frame = self._read(path, ids)
        require_columns(frame, list(self.columns), origin)
        frame = frame[list(self.columns)].rename(columns=self.columns)
        with own_names(self.columns):
            return origin, canonical_interactions(frame, origin, self.on_duplicate)

    def _read_side(self, path: str, id_column: str, canonical: str) -> tuple[str, pd.DataFrame]:
        origin, frame = self._read(path, [id_column, *self.multi_valued])
        require_columns(frame, [id_column], origin)
        renamed = {id_column: canonical}
        if id_column != canonical and canonical in frame.columns:
            raise DataError(origin, canonical, f"clashes with id column '{id_column}'; rename one of them")
        with own_names(renamed):
            table = canonical_side_table(frame.rename(columns=renamed), canonical, origin)
        for column in table.columns:
            dtype = table[column].dtype
            if isinstance(dtype, pd.ArrowDtype) and pa.types.is_list(dtype.pyarrow_dtype):
                table[column] = as_string_lists(table[column])
            elif column in self.multi_valued and column != canonical:
                table[column] = split_strings(table[column], self.multi_valued[column])
        return origin, table

    def _read(self, path: str, text_columns: list[str]) -> tuple[str, pd.DataFrame]:
        """The raw table and its origin; ``text_columns`` are read as strings from CSV."""
        file = expand(path)
        origin = str(file)
        fmt = file_format(file)
        if not file.exists():
            raise DataError(origin, None, f"file not found (looked for {file.resolve()})")
        if file.is_file() and file.stat().st_size == 0:
            raise DataError(origin, None, "empty file (0 bytes); expected a header row and data")
        try:
            if fmt == "parquet":
                return origin, read_parquet(file)
            engine = "c" if len(self.csv_separator) == 1 else "python"  # C parses single-character separators
            text = dict.fromkeys(text_columns, str)
            return origin, pd.read_csv(file, sep=self.csv_separator, engine=engine, dtype=text)
        except pd.errors.EmptyDataError:
            raise DataError(origin, None, "empty file; expected a header row and data") from None
        except (pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as error:
            raise DataError(origin, None, f"cannot read as {fmt} (truncated or corrupt?): {error}") from error


def expand(path: str) -> Path:
    return Path(path).expanduser()


def file_format(path: Path) -> str:
    """``csv`` or ``parquet``, from the file name's suffix."""
    name = path.name.lower()
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise DataError(str(path), None, f"unsupported file type; expected a name ending in {', '.join(FORMATS)}")


@contextmanager
def own_names(renamed: dict[str, str]) -> Iterator[None]:
    """Report a canonical check's error under the file's column name, not the canonical one."""
    try:
        yield
    except DataError as error:
        original = {canonical: source for source, canonical in renamed.items()}
        if error.column not in original:
            raise
        raise DataError(error.origin, original[error.column], error.problem) from None


def as_string_lists(values: pd.Series) -> pd.Series:
    """A Parquet list column as ``list<string>``; missing lists become ``[]``."""
    string_list = STRING_LIST.pyarrow_dtype
    lists = pc.fill_null(pa.array(values).cast(string_list), pa.scalar([], string_list))
    return pd.Series(pd.arrays.ArrowExtensionArray(lists), index=values.index, name=values.name)
