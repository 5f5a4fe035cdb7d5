"""Data faults through the CLI: each bad input of the data layer, fed to ``wdrec fit`` with a
Files-source config, ends it with exit status 2 and one line
``wdrec: <file>: column '<column>': <problem>``; no trace, no checkpoint, nothing in the data
cache, no MLflow model registered.

Each fault runs in-process through ``wdrec.cli.main`` (what the console script calls; default
run, about a second each) and as a real ``wdrec`` process, which also shows that nothing else
is printed (no traceback). A real process is mostly the import of torch, Lightning and MLflow,
10-50 s on the shared 2-core machine: the default run starts one, the slow run all six (a few
at a time).
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from commands import main_in_process, wdrec
from mlflow import MlflowClient

PARALLEL = 3
TIMEOUT_S = 240


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


def run_fault(name: str, folder: Path, in_process: bool) -> Outcome:
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
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "WDREC_DATA_DIR": str(folder / "cache")}
    argv = ["fit", "--config", str(folder / "config.yaml")]
    start = time.monotonic()
    if in_process:
        returncode, stdout, stderr = main_in_process(argv, env, folder)
    else:
        result = subprocess.run([*wdrec(), *argv], cwd=folder, env={**os.environ, **env}, capture_output=True, text=True,
                                timeout=TIMEOUT_S)  # fmt: skip
        returncode, stdout, stderr = result.returncode, result.stdout, result.stderr
    return Outcome(folder, str(folder / file), column, problem, returncode, stdout, stderr, time.monotonic() - start)


def run_faults(root: Path, names: list[str], in_process: bool) -> dict[str, Outcome]:
    if in_process:
        return {name: run_fault(name, root / name.replace(" ", "-"), True) for name in names}
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(run_fault, name, root / name.replace(" ", "-"), False) for name in names}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    return run_faults(tmp_path_factory.mktemp("data-faults-in-process"), list(FAULTS), in_process=True)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    return run_faults(tmp_path_factory.mktemp("data-faults-process"), ["truncated parquet"], in_process=False)


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    return run_faults(tmp_path_factory.mktemp("data-faults-processes"), list(FAULTS), in_process=False)


def check_one_clear_line(outcome: Outcome) -> None:
    output = outcome.stdout + outcome.stderr
    assert outcome.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last = outcome.stderr.strip().splitlines()[-1]
    assert last.startswith("wdrec: ") and outcome.file in last and outcome.problem in last, last
    if outcome.column:
        assert f"column '{outcome.column}'" in last, last
    assert sum(line.startswith("wdrec: ") for line in outcome.stderr.splitlines()) == 1


def check_nothing_left(outcome: Outcome) -> None:
    folder = outcome.folder
    assert not (folder / "checkpoints").exists() and not (folder / "bundles").exists()
    cache = folder / "cache"
    assert not cache.exists() or not any(cache.rglob("*")), sorted(cache.rglob("*"))
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix in (".tmp", ".partial")]
    assert not leftovers, leftovers
    if (folder / "mlflow.db").exists():
        client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
        assert client.search_registered_models() == []
        assert client.search_model_versions() == []


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_input_stops_wdrec_fit_with_one_clear_line(in_process: dict[str, Outcome], fault: str) -> None:
    check_one_clear_line(in_process[fault])
    check_nothing_left(in_process[fault])


def test_a_real_wdrec_process_prints_the_line_and_no_trace(one_process: dict[str, Outcome]) -> None:
    (outcome,) = one_process.values()
    check_one_clear_line(outcome)
    check_nothing_left(outcome)


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_bad_input_through_a_real_wdrec_process(processes: dict[str, Outcome], fault: str) -> None:
    check_one_clear_line(processes[fault])
    check_nothing_left(processes[fault])


@pytest.mark.slow
def test_data_faults_figures(processes: dict[str, Outcome], report) -> None:  # noqa: ANN001
    report("data_faults", faults_injected=len(processes), nonzero_exits=sum(o.returncode != 0 for o in processes.values()),
           slowest_run_s=round(max(o.seconds for o in processes.values()), 1),
           lines={name: o.stderr.strip().splitlines()[-1] for name, o in processes.items()})  # fmt: skip
    assert all(o.returncode == 2 for o in processes.values())


def test_a_refused_config_value_is_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A value the Files source refuses (in-process, through the same ``main`` the console script calls)."""
    from wdrec.cli import main

    good_log().to_csv(tmp_path / "log.csv", index=False)
    config = {"data": {"source": {"class_path": "wdrec.data.sources.files.Files",
                                  "init_args": {"interactions": str(tmp_path / "log.csv"), "user_column": "customer",
                                                "item_column": "sku", "on_duplicate": "sometimes"}}}}  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(tmp_path / "config.yaml")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "wdrec: Files: on_duplicate must be one of ('error', 'drop', 'keep'), got 'sometimes'", err[-5:]
    assert not (tmp_path / "checkpoints").exists()
