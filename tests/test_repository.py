"""What a new user meets in the checkout before any code runs: the Makefile, the licence, the README."""

from __future__ import annotations

import subprocess
import tomllib

from paths import REPO_ROOT

from serving.config import Settings
from wdrec.data.sources.base import DATA_DIR_ENV

README = (REPO_ROOT / "README.md").read_text()


def test_make_clean_leaves_no_tracking_store_pointing_at_deleted_artifacts(tmp_path) -> None:
    left = ["mlflow.db", "optuna.db", "mlruns/1/abc/artifacts/model", "mlartifacts/x", "checkpoints/last.ckpt", "bundles/abc/weights"]
    for path in left:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    (tmp_path / "my-notes.txt").write_text("keep me")
    subprocess.run(["make", "-f", str(REPO_ROOT / "Makefile"), "clean"], cwd=tmp_path, check=True, capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-notes.txt"]


def test_the_declared_licence_ships_with_the_code() -> None:
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (REPO_ROOT / "LICENSE").read_text()
    assert declared == "Apache-2.0" and "Apache License" in text and "Version 2.0, January 2004" in text


def test_readme_says_how_to_install_the_cpu_build_of_torch_elsewhere() -> None:
    assert 'make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"' in README


def test_readme_lists_every_wdrec_setting() -> None:
    names = {f"WDREC_{name.upper()}" for name in Settings.model_fields} | {DATA_DIR_ENV}
    missing = sorted(name for name in names if f"`{name}`" not in README)
    assert not missing, f"README does not list {missing}"
