"""Serving fixtures: the real bundle of ``trained_run``, copies of it, and apps serving them.

Apps run inside ``with TestClient(app) as client:`` so that the lifespan loads the model.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers import copy_bundle as _copy_bundle
from servers import corrupt_bundle as _corrupt

from serving.config import Settings
from serving.main import create_app
from wdrec.export.bundle import read_bundle, write_bundle
from wdrec.model.widedeep import WideDeep

with warnings.catch_warnings():  # starlette's TestClient warns about httpx at import
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

ADMIN_TOKEN = "test-admin-token"
LIMITS = {"max_k": 100, "max_ids": 50, "max_body_bytes": 16_384}


def _settings(**overrides: object) -> Settings:
    """Settings for tests: small limits (so each can be crossed), an admin token."""
    return Settings(**{"admin_token": ADMIN_TOKEN, **LIMITS, **overrides})


@pytest.fixture(scope="session")
def make_settings() -> Callable[..., Settings]:
    return _settings


@pytest.fixture(scope="session")
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="session")
def bundle(trained_run) -> Path:  # noqa: ANN001
    return trained_run.bundle


@pytest.fixture(scope="session")
def bundle_v2(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model, registered (by its metadata) as version 2."""
    return _copy_bundle(bundle, tmp_path_factory.mktemp("v2") / "bundle", version="2")


@pytest.fixture(scope="session")
def corrupted_bundle(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _corrupt(_copy_bundle(bundle, tmp_path_factory.mktemp("corrupted") / "bundle"))


@pytest.fixture(scope="session")
def regression_bundle(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained network's weights under a regression head: scores are raw predictions, not probabilities."""
    trained = read_bundle(bundle)
    net = WideDeep(dataclasses.replace(trained.net.config, task="regression"))
    net.load_state_dict(trained.net.state_dict())
    metadata = {"registered_model": "wdrec-rating", "version": "7", "run_id": trained.metadata.get("run_id")}
    return write_bundle(tmp_path_factory.mktemp("regression") / "bundle", net.eval(), trained.spec, trained.users, trained.items, metadata)


@pytest.fixture(scope="module")
def client(bundle: Path) -> Iterator[TestClient]:
    """One app per test module, serving the trained bundle (tests here must not reload it)."""
    with TestClient(create_app(str(bundle), _settings())) as client:
        yield client


@pytest.fixture
def fresh_client(bundle: Path) -> Iterator[TestClient]:
    """An app of the test's own, for tests that reload or otherwise change the served model."""
    with TestClient(create_app(str(bundle), _settings())) as client:
        yield client
