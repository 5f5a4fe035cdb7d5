"""Files written whole or not at all, and Parquet that round-trips list columns."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def arrow_column(values: pd.Series) -> pa.Array:
    """A pandas column as one contiguous Arrow array.

    Columns concatenated from several files or read from several Parquet row groups are
    chunked, and ``pa.array`` then returns a ``ChunkedArray``, which list builders and
    ``.offsets`` refuse.
    """
    array = pa.array(values, from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash or an exception inside ``write`` leaves ``path`` as it was (absent or old).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; caches and bundles are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Parquet without pandas metadata (pandas 3 cannot read back its own list dtypes from it)."""
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read Parquet; list columns come back as pyarrow ``list<string>`` columns."""
    table = pq.read_table(path, columns=columns)
    return table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t) else None)
