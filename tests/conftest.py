"""Fixtures shared by the whole suite.

MovieLens-100k is real data: it is fetched once per machine into the data cache
(``$WDREC_DATA_DIR``, else ``~/.cache/wdrec``) and read from there afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from commands import SHORT_FIT
from paths import DEFAULT_CONFIG

from wdrec.data.features import Cross, Field
from wdrec.data.schema import InteractionData
from wdrec.data.sources.base import default_data_dir
from wdrec.data.sources.movielens import MovieLens

FeatureDeclarations = tuple[list[Field], list[Cross]]


@pytest.fixture(scope="session", autouse=True)
def isolated_workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run the suite in a scratch directory with its own MLflow store, so no test writes
    ``mlflow.db``, ``mlruns/``, ``checkpoints/`` or ``bundles/`` into the checkout. Served models
    must score with the precomputed scorer (``WDREC_FAST_PATH=require``): a mismatch fails."""
    workdir = tmp_path_factory.mktemp("workdir")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
        patch.setenv("WDREC_FAST_PATH", "require")
        patch.chdir(workdir)
        yield workdir


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module's torch ops on one thread, then restore the setting.

    The data layer runs many small index ops (sort, unique, searchsorted). On the shared
    2-core machines, under load, each OpenMP parallel region waits on a descheduled
    thread: measured 10-100x slower with 2 threads than with 1 (torch.unique of 98k: 0.4 s
    vs 5 ms). Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The persistent download cache, so MovieLens is fetched once per machine, not per run."""
    path = default_data_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def movielens_100k(data_dir: Path) -> InteractionData:
    """MovieLens-100k's canonical tables: 100,000 ratings, 943 users, 1,682 movies."""
    return MovieLens("100k").load(data_dir)


def _movielens_features() -> FeatureDeclarations:
    fields = [
        Field("user_id", "user"),
        Field("age", "user", kind="numeric", transform="bucketize", boundaries=[18, 25, 35, 45, 50, 56]),
        Field("gender", "user"),
        Field("occupation", "user"),
        Field("zip_prefix", "user", column="zip_code", min_count=5, wide=False),
        Field("history", "user", kind="history", max_length=50, deep=False),
        Field("item_id", "item"),
        Field("genres", "item", kind="multi_hot"),
        Field("release_year", "item", kind="numeric"),
    ]
    crosses = [
        Cross(["gender", "genres"]),
        Cross(["occupation", "genres"]),
        Cross(["age", "genres"]),
        Cross(["history", "item_id"]),
    ]
    return fields, crosses


@pytest.fixture(scope="session")
def movielens_features() -> Callable[[], FeatureDeclarations]:
    """``movielens_features()`` → fresh ``(fields, crosses)`` for MovieLens (fresh: Field is mutable)."""
    return _movielens_features


@dataclass
class TrainedRun:
    """One real ``wdrec fit`` of the default job, shortened: what later stages consume."""

    workdir: Path
    tracking_uri: str
    run_id: str
    bundle: Path
    checkpoint_dir: Path
    cli: object  # wdrec.job.WdrecCLI: trainer, model, datamodule


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> TrainedRun:
    """``wdrec fit --config configs/movielens100k.yaml`` for one short epoch, in its own
    directory and MLflow store, registered as ``wdrec`` version 1 (alias ``champion``)."""
    from wdrec.job import run

    workdir = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    with contextlib.chdir(workdir), pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        cli = run(["fit", "--config", str(DEFAULT_CONFIG), *SHORT_FIT])
    run_id = cli.trainer.logger.run_id
    return TrainedRun(workdir, uri, run_id, workdir / "bundles" / run_id, workdir / "checkpoints", cli)

