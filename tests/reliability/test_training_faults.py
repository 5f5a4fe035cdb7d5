"""Training faults: the tracking server unreachable, and ``kill -9`` in the middle of an epoch.

- An unreachable ``MLFLOW_TRACKING_URI`` ends ``wdrec fit`` within seconds, before any data
  is read or any step trained: exit status 2, one line ``wdrec: MLflow tracking server ...``.
- ``kill -9`` of a real ``wdrec fit`` in its second epoch, then ``--ckpt_path last``: the
  resumed fit ends with the metrics and weights of an uninterrupted run with the same seed;
  the killed run is marked FAILED (with a note) instead of staying RUNNING, the two runs are
  linked, and no model version comes from the killed run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from commands import wdrec
from mlflow import MlflowClient
from paths import DEFAULT_CONFIG
from servers import free_port

from wdrec.training.tracking import (
    HOST_TAG,
    NOTE_TAG,
    PID_TAG,
    RESUMED_FROM_TAG,
    RESUMED_IN_TAG,
    START_TAG,
    close_abandoned_runs,
    process_start,
    process_tags,
)

# The final metrics of a resumed fit and of an uninterrupted one agree to this (resume restores
# the torch RNG, the data path reseeds by epoch: measured equal to the last bit).
METRIC_TOLERANCE = 1e-6
BATCHES = 24  # training batches per epoch
EPOCHS = 2


def fit_args(*extra: str) -> list[str]:
    """A real fit of the default job, cut short: EPOCHS epochs of BATCHES batches, 100 users ranked.

    A further ModelCheckpoint saves in ``checkpoints/progress`` at step 1.5 x BATCHES: in the
    middle of the second epoch, which is how the test knows when to kill. (``last.ckpt`` is
    written at every epoch's end by the CLI's ``last_checkpoint``.)
    """
    return [*wdrec(), "fit", "--config", str(DEFAULT_CONFIG), f"--trainer.max_epochs={EPOCHS}",
            f"--trainer.limit_train_batches={BATCHES}", "--trainer.limit_val_batches=2", "--data.ranking_max_users=100",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.dirpath=checkpoints/progress",
            f"--trainer.callbacks.every_n_train_steps={BATCHES * 3 // 2}", "--trainer.callbacks.filename=progress-{step}",
            *extra]  # fmt: skip


def fit_env(workdir: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}


# ------------------------------------------------------------------ tracking store unreachable
def test_unreachable_tracking_server_stops_wdrec_fit_before_training(tmp_path: Path, report) -> None:  # noqa: ANN001
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "WDREC_DATA_DIR": str(tmp_path / "cache")}
    start = time.monotonic()
    result = subprocess.run([*wdrec(), "fit", "--config", str(DEFAULT_CONFIG)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=180)  # fmt: skip
    seconds = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"wdrec: MLflow tracking server {uri} is unreachable"), last
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "bundles").exists()
    assert not (tmp_path / "cache").exists()  # stopped before the data was even read
    report("tracking_unreachable", exit_code=result.returncode, seconds=round(seconds, 1), message=last)
    assert seconds < 90  # the process start (imports) dominates; the check itself takes milliseconds


# ------------------------------------------------------------------ runs left RUNNING
def test_only_runs_whose_process_is_gone_are_marked_failed(tmp_path: Path) -> None:
    """The sweep ``wdrec fit`` does at start, on a store holding one run of each kind."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("wdrec")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = process_tags()
    host = me[HOST_TAG]
    cases = {
        "killed": {HOST_TAG: host, PID_TAG: str(gone.pid)},
        "alive": me,  # this very process: still running
        "pid reused": {**me, START_TAG: str(int(me.get(START_TAG, "0")) + 1)},  # same pid, another process
        "other host": {HOST_TAG: host + "-elsewhere", PID_TAG: str(gone.pid)},
        "no tags": {},
    }
    runs = {name: client.create_run(experiment, tags=tags).info.run_id for name, tags in cases.items()}
    finished = client.create_run(experiment, tags=cases["killed"]).info.run_id
    client.set_terminated(finished, "FINISHED")

    closed = close_abandoned_runs(uri, "wdrec")

    expected = {"killed"} | ({"pid reused"} if process_start(os.getpid()) else set())
    assert sorted(closed) == sorted(runs[name] for name in expected)
    for name, run_id in runs.items():
        run = client.get_run(run_id)
        assert run.info.status == ("FAILED" if name in expected else "RUNNING"), name
        assert (NOTE_TAG in run.data.tags) == (name in expected), name
    assert client.get_run(finished).info.status == "FINISHED"
    assert close_abandoned_runs(uri, "wdrec") == []  # nothing left to close
    assert close_abandoned_runs(uri, "no-such-experiment") == []


# ------------------------------------------------------------------ kill -9 and resume
def _wait_for(predicate, timeout: float, process: subprocess.Popen | None = None, what: str = "") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the fit ended (status {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path: Path, report) -> None:  # noqa: ANN001
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_dir.mkdir()
    killed_dir.mkdir()

    # The uninterrupted run goes beside the killed one (two cores: the wall time of one run).
    results: dict[str, subprocess.CompletedProcess] = {}

    def straight() -> None:
        results["straight"] = subprocess.run(fit_args("--registry.enabled=false"), cwd=straight_dir, env=fit_env(straight_dir),
                                             capture_output=True, text=True, timeout=900)  # fmt: skip

    beside = threading.Thread(target=straight)
    beside.start()
    try:
        log = (killed_dir / "killed.log").open("w")
        process = subprocess.Popen(fit_args(), cwd=killed_dir, env=fit_env(killed_dir), stdout=log, stderr=subprocess.STDOUT)
        try:
            last = killed_dir / "checkpoints" / "last.ckpt"
            progress = killed_dir / "checkpoints" / "progress"
            _wait_for(last.exists, 600, process, "the first epoch's last.ckpt")
            _wait_for(lambda: progress.exists() and any(progress.glob("*.ckpt")), 600, process,
                      "the step checkpoint in the middle of the second epoch")  # fmt: skip
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(timeout=60) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=60)
            log.close()
    finally:
        beside.join(timeout=900)
    assert results["straight"].returncode == 0, results["straight"].stderr[-3000:]

    # What the kill left: a loadable end-of-epoch-1 checkpoint, no temporary files, no bundle.
    checkpoints = killed_dir / "checkpoints"
    killed_epoch = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["epoch"]
    assert killed_epoch == 0, "last.ckpt should be the one written at the end of the first epoch"
    for checkpoint in checkpoints.rglob("*"):
        assert checkpoint.is_dir() or checkpoint.suffix == ".ckpt", checkpoint
    assert not (killed_dir / "bundles").exists()
    store = MlflowClient(f"sqlite:///{killed_dir / 'mlflow.db'}")
    (killed,) = store.search_runs([store.get_experiment_by_name("wdrec").experiment_id])
    assert killed.info.status == "RUNNING"  # what kill -9 leaves, until the next fit looks

    resumed = subprocess.run(fit_args("--ckpt_path=last"), cwd=killed_dir, env=fit_env(killed_dir), capture_output=True,
                             text=True, timeout=900)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # The killed run: FAILED, with a note saying why, linked to the run that resumed it.
    killed = store.get_run(killed.info.run_id)
    assert killed.info.status == "FAILED"
    assert "ended without closing this run" in killed.data.tags[NOTE_TAG]
    runs = store.search_runs([killed.info.experiment_id])
    (resumed_run,) = [run for run in runs if run.info.run_id != killed.info.run_id]
    assert resumed_run.info.status == "FINISHED"
    assert resumed_run.data.tags[RESUMED_FROM_TAG] == killed.info.run_id
    assert killed.data.tags[RESUMED_IN_TAG] == resumed_run.info.run_id
    assert not [run for run in runs if run.info.status == "RUNNING"]

    # Registry: one version, from the completed (resumed) run; none from the killed run.
    versions = store.search_model_versions("name = 'wdrec'")
    assert [v.run_id for v in versions] == [resumed_run.info.run_id]

    # Same final metrics and weights as the uninterrupted run.
    reference = MlflowClient(f"sqlite:///{straight_dir / 'mlflow.db'}")
    (straight_run,) = reference.search_runs([reference.get_experiment_by_name("wdrec").experiment_id])
    keys = ("val_loss", "val_auc", "val_logloss", "val_hr_10", "val_ndcg_10", "val_recall_10", "train_loss")
    differences = {}
    for key in keys:
        expected, actual = straight_run.data.metrics[key], resumed_run.data.metrics[key]
        differences[key] = abs(expected - actual)
    assert max(differences.values()) <= METRIC_TOLERANCE, differences
    final = {name: torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
             for name, folder in (("straight", straight_dir), ("resumed", killed_dir))}  # fmt: skip
    assert final["straight"]["global_step"] == final["resumed"]["global_step"] == EPOCHS * BATCHES
    for (name, a), (_, b) in zip(final["straight"]["state_dict"].items(), final["resumed"]["state_dict"].items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    report("kill_9_resume", faults_injected=1, killed_in_epoch=2, largest_metric_difference=max(differences.values()),
           metrics={k: resumed_run.data.metrics[k] for k in keys}, killed_run_status=killed.info.status,
           versions_from_killed_run=0, data_lost="none")  # fmt: skip
