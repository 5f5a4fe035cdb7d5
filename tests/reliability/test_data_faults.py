"""Data faults through the real CLI: each bad input of the data layer, fed to a real
``wdrec fit`` process with a Files-source config, ends it with exit status 2 and one line
``wdrec: <file>: column '<column>': <problem>``; no trace, no checkpoint, nothing in the
data cache, no MLflow model registered.

The processes run a few at a time (each is mostly the import of torch, Lightning and MLflow).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

PARALLEL = 3
TIMEOUT_S = 240


def wdrec() -> list[str]:
    script = shutil.which("wdrec", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "wdrec.cli"]


def good_log() -> pd.DataFrame:
    """A small, valid interaction log under the user's own column names."""
    rows = [(f"u{u}", f"i{(u * 7 + t * 3) % 40}", float(1 + (u + t) % 5), 1_000 + t) for u in range(30) for t in range(8)]
    return pd.DataFrame(rows, columns=["customer", "sku", "stars", "ts"])


def _missing_column(folder: Path) -> tuple[str, str, str]:
    good_log().drop(columns=["sku"]).to_csv(folder / "log.csv", index=False)
    return "log.csv", "sku", "missing"


def _wrong_type(folder: Path) -> tuple[str, str, str]:
    log = good_log().astype({"stars": object})
    log.loc[5, "stars"] = "five"
    log.to_csv(folder / "log.csv", index=False)
    return "log.csv", "stars", "expected numbers, found 'five'"


def _nan_ids(folder: Path) -> tuple[str, str, str]:
    log = good_log()
    log.loc[[3, 17], "customer"] = None
    log.to_csv(folder / "log.csv", index=False)
    return "log.csv", "customer", "2 missing ids"


def _empty_file(folder: Path) -> tuple[str, str, str]:
    (folder / "log.csv").write_bytes(b"")
    return "log.csv", "", "empty file"


def _truncated_parquet(folder: Path) -> tuple[str, str, str]:
    good_log().to_parquet(folder / "log.parquet", index=False)
    data = (folder / "log.parquet").read_bytes()
    (folder / "log.parquet").write_bytes(data[: len(data) // 2])
    return "log.parquet", "", "truncated or corrupt"


def _duplicate_rows(folder: Path) -> tuple[str, str, str]:
    log = good_log()
    pd.concat([log, log.iloc[[4]]]).to_csv(folder / "log.csv", index=False)
    return "log.csv", "", "1 duplicate interactions"


FAULTS = {
    "missing column": _missing_column,
    "wrong type": _wrong_type,
    "NaN ids": _nan_ids,
    "empty file": _empty_file,
    "truncated parquet": _truncated_parquet,
    "duplicate rows": _duplicate_rows,
}


@dataclass
class Outcome:
    folder: Path
    file: str
    column: str
    problem: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_fault(name: str, folder: Path) -> Outcome:
    folder.mkdir(parents=True)
    file, column, problem = FAULTS[name](folder)
    config = {
        "seed_everything": 1,
        "trainer": {"max_epochs": 1, "enable_progress_bar": False},
        "data": {
            "source": {"class_path": "wdrec.data.sources.files.Files",
                       "init_args": {"interactions": str(folder / file), "user_column": "customer", "item_column": "sku",
                                     "rating_column": "stars", "timestamp_column": "ts"}},
            "batch_size": 64,
        },
    }  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "WDREC_DATA_DIR": str(folder / "cache")}
    start = time.monotonic()
    result = subprocess.run([*wdrec(), "fit", "--config", str(folder / "config.yaml")], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    return Outcome(folder, str(folder / file), column, problem, result.returncode, result.stdout, result.stderr,
                   time.monotonic() - start)  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("data-faults")
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(run_fault, name, root / name.replace(" ", "-")) for name in FAULTS}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_input_stops_wdrec_fit_with_one_clear_line(outcomes: dict[str, Outcome], fault: str) -> None:
    outcome = outcomes[fault]
    output = outcome.stdout + outcome.stderr
    assert outcome.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last = outcome.stderr.strip().splitlines()[-1]
    assert last.startswith("wdrec: ") and outcome.file in last and outcome.problem in last, last
    if outcome.column:
        assert f"column '{outcome.column}'" in last, last
    assert sum(line.startswith("wdrec: ") for line in outcome.stderr.splitlines()) == 1


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_input_leaves_nothing_behind(outcomes: dict[str, Outcome], fault: str) -> None:
    folder = outcomes[fault].folder
    assert not (folder / "checkpoints").exists() and not (folder / "bundles").exists()
    cache = folder / "cache"
    assert not cache.exists() or not any(cache.rglob("*")), sorted(cache.rglob("*"))
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix in (".tmp", ".partial")]
    assert not leftovers, leftovers
    if (folder / "mlflow.db").exists():
        client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
        assert client.search_registered_models() == []
        assert client.search_model_versions() == []


def test_data_faults_figures(outcomes: dict[str, Outcome], report) -> None:  # noqa: ANN001
    report("data_faults", faults_injected=len(outcomes), nonzero_exits=sum(o.returncode != 0 for o in outcomes.values()),
           seconds_per_run=round(max(o.seconds for o in outcomes.values()), 1),
           lines={name: o.stderr.strip().splitlines()[-1] for name, o in outcomes.items()})  # fmt: skip
    assert all(o.returncode == 2 for o in outcomes.values())
