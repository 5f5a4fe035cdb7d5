"""Fixtures of the reliability suites: two real model versions, a corrupted copy, and the way
they report measured figures.

Version 1 (``bundle_a``) is the bundle of ``trained_run`` (one real short ``wdrec fit``);
version 2 (``bundle_b``) is the same network with every weight perturbed (seeded noise), so
that its scores and rankings differ from version 1's and a response can be traced to the
version that produced it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from servers import copy_bundle, corrupt_bundle

from wdrec.export.bundle import read_bundle, write_bundle

ADMIN_TOKEN = "reliability-admin-token"
FIGURES_ENV = "WDREC_RELIABILITY_FIGURES"  # a JSON-lines file the suites append their figures to


@pytest.fixture(scope="session")
def bundle_a(trained_run) -> Path:  # noqa: ANN001
    return trained_run.bundle


@pytest.fixture(scope="session")
def bundle_b(bundle_a: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model: version 1's weights plus seeded noise (10% of each tensor's spread), version 2."""
    trained = read_bundle(bundle_a)
    generator = torch.Generator().manual_seed(7)
    state = {}
    for name, tensor in trained.net.state_dict().items():
        if tensor.is_floating_point() and tensor.numel() > 1 and "running_var" not in name:
            noise = torch.randn(tensor.shape, generator=generator) * (0.1 * float(tensor.std()) + 1e-3)
            tensor = tensor + noise
        state[name] = tensor
    trained.net.load_state_dict(state)
    metadata = {**{k: v for k, v in trained.metadata.items() if k not in ("sha256", "version")}, "version": "2"}
    return write_bundle(tmp_path_factory.mktemp("bundle-b") / "bundle", trained.net.eval(), trained.spec, trained.users,
                        trained.items, metadata)  # fmt: skip


@pytest.fixture(scope="session")
def corrupted_bundle(bundle_a: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 with flipped bytes in its weights (the checksum in metadata.json no longer matches)."""
    return corrupt_bundle(copy_bundle(bundle_a, tmp_path_factory.mktemp("corrupted") / "bundle"))


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _report(scenario: str, **figures: Any) -> None:
    """Print a scenario's measured figures (``pytest -s`` shows them) and append them to
    ``$WDREC_RELIABILITY_FIGURES`` when set: docs/reliability.md is written from these."""
    line = json.dumps({"scenario": scenario, **figures}, default=str)
    print(f"\nRELIABILITY {line}")
    if path := os.environ.get(FIGURES_ENV):
        with open(path, "a") as out:
            out.write(line + "\n")


@pytest.fixture(scope="session")
def report() -> Callable[..., None]:
    """``report(scenario, **figures)``: see :func:`_report`."""
    return _report

