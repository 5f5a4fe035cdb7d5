"""What a source is, and the cache every source writes to.

A source turns some input (a download, the user's files, a generator) into canonical
:class:`~wdrec.data.schema.InteractionData`. Sources that download write their result
once into the data directory as Parquet; later loads read that. Every file lands under a
temporary name and is renamed into place, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import os
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path

import pandas as pd

from wdrec.data.io import atomic_write, file_digest, read_parquet, write_parquet
from wdrec.data.schema import InteractionData

DATA_DIR_ENV = "WDREC_DATA_DIR"


def default_data_dir() -> Path:
    """``$WDREC_DATA_DIR``, else ``~/.cache/wdrec``."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "wdrec").expanduser()


class SourceUnavailable(RuntimeError):
    """No route to the data worked; the message lists each route and why it failed."""


class InteractionSource(ABC):
    """Where interactions come from. Subclasses are chosen in the config by ``class_path``."""

    def prepare(self, data_dir: Path) -> None:  # noqa: B027 - optional hook
        """Download or convert once per machine (LightningDataModule.prepare_data)."""

    @abstractmethod
    def load(self, data_dir: Path) -> InteractionData:
        """The canonical tables; cheap when ``prepare`` already ran."""

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    @property
    def carries_split(self) -> bool:
        """True when the input comes already split into train/val/test (the ``predefined`` split)."""
        return False


def download(url: str, path: Path, checksum: str, algorithm: str = "md5", timeout: float = 20.0) -> Path:
    """Fetch ``url`` to ``path`` (atomically) and verify its checksum; a mismatch leaves no file."""

    def fetch(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        actual = file_digest(tmp, algorithm)
        if actual != checksum:
            raise ValueError(f"{url}: {algorithm} {actual} does not match the published {checksum}")

    return atomic_write(path, fetch)


def write_parquet_tables(directory: Path, tables: dict[str, pd.DataFrame | None]) -> None:
    """Cache canonical tables as Parquet, each file written atomically."""
    for name, frame in tables.items():
        if frame is not None:
            write_parquet(frame, directory / f"{name}.parquet")


def read_parquet_tables(directory: Path, origin: str) -> InteractionData:
    def read(name: str) -> pd.DataFrame | None:
        path = directory / f"{name}.parquet"
        return read_parquet(path) if path.exists() else None

    interactions = read("interactions")
    if interactions is None:
        raise FileNotFoundError(f"{directory}: no cached interactions.parquet; run prepare() first")
    return InteractionData(
        interactions, read("users"), read("items"), origins=dict.fromkeys(("interactions", "users", "items"), origin)
    )
