"""The registered pyfunc model outside this checkout: it carries the wdrec package as code and
pins what loading and predicting import, so a bare virtualenv with only those loads and serves it."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from importlib.metadata import packages_distributions, version
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.models import Model

from wdrec.export.bundle import read_bundle
from wdrec.export.registry import PYFUNC_CODE, WDREC_CODE
from wdrec.export.scorer import Scorer

CHAMPION = "models:/wdrec@champion"
# Known users, a user the model has never seen, and one item twice.
PAIRS = {"user_id": ["196", "186", "999999", "196"], "item_id": ["242", "302", "1", "1"]}


@pytest.fixture()
def requirements(trained_run, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The champion's requirements.txt, as MLflow hands it out: {name: pinned version}."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_run.tracking_uri)
    mlflow.set_tracking_uri(trained_run.tracking_uri)
    lines = Path(mlflow.pyfunc.get_model_dependencies(CHAMPION)).read_text().split()
    assert all("==" in line for line in lines), f"unpinned requirement in {lines}"
    return dict(line.split("==") for line in lines)


def test_logged_model_carries_the_wdrec_package_and_pinned_requirements(requirements, tmp_path) -> None:
    local = Path(mlflow.artifacts.download_artifacts(CHAMPION, dst_path=str(tmp_path)))
    code = local / Model.load(local / "MLmodel").flavors["python_function"]["code"]
    assert (code / "wdrec" / "export" / "scorer.py").is_file() and (code / "wdrec" / "model" / "widedeep.py").is_file()
    assert set(requirements) == {"mlflow", "torch", "numpy", "pandas", "pyarrow", "safetensors"}  # no wdrec, no lightning
    assert requirements["torch"] == version("torch").partition("+")[0]  # installable: no local label such as +cpu
    assert requirements["mlflow"] == version("mlflow")


def test_the_code_the_model_runs_imports_nothing_beyond_its_requirements(requirements) -> None:
    imported = _third_party_imports(PYFUNC_CODE)
    distributions = packages_distributions()
    outside = {name for name in imported if not set(distributions.get(name, [name])) & set(requirements)}
    assert not outside, f"the pyfunc model's code imports {sorted(outside)}, which its requirements do not list"


@pytest.mark.slow
def test_a_bare_virtualenv_with_only_the_requirements_loads_the_champion(trained_run, requirements, tmp_path) -> None:
    """About 2.5 min on the shared 2-core machine (135 s, 2026-12), nearly all of it pip installing
    the ~100 packages that mlflow and torch pull in; plus the session's short fit if not yet run."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MLFLOW_TRACKING_URI"] = trained_run.tracking_uri
    python, pinned = tmp_path / "venv" / "bin" / "python", mlflow.pyfunc.get_model_dependencies(CHAMPION)
    for command in ([sys.executable, "-m", "venv", "venv"], [python, "-m", "pip", "install", "-q", "-r", pinned]):
        subprocess.run(command, cwd=tmp_path, env=env, check=True, timeout=1200)
    script = (
        "import json, sys, importlib.util, mlflow, pandas as pd\n"
        f"scores = mlflow.pyfunc.load_model({CHAMPION!r}).predict(pd.DataFrame({PAIRS!r}))\n"
        "json.dump({'scores': scores.tolist(), 'wdrec': sys.modules['wdrec'].__file__,\n"
        "           'lightning': importlib.util.find_spec('lightning') is not None}, open('out.json', 'w'))\n"
    )
    subprocess.run([python, "-c", script], cwd=tmp_path, env=env, check=True, timeout=600)
    out = json.loads((tmp_path / "out.json").read_text())
    assert not out["lightning"] and not Path(out["wdrec"]).is_relative_to(WDREC_CODE.parent)  # the model's copy
    expected = Scorer(read_bundle(trained_run.bundle)).score_pairs(PAIRS["user_id"], PAIRS["item_id"])
    np.testing.assert_allclose(out["scores"], expected, atol=1e-6)


def _third_party_imports(start: Path) -> set[str]:
    """Top-level modules outside wdrec and the standard library that ``start`` and every wdrec
    module it reaches import, function-local imports included (over-approximates, never misses)."""
    seen: set[Path] = set()
    todo, found = [start], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path):
            parts = name.split(".")
            if parts[0] != "wdrec":
                found.add(parts[0])
                continue
            for depth in range(1, len(parts) + 1):  # each package on the way runs its __init__
                base = WDREC_CODE.parent.joinpath(*parts[:depth])
                todo += [file for file in (base / "__init__.py", base.with_suffix(".py")) if file.is_file()]
    return found - set(sys.stdlib_module_names)


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from package import module`
    return names
