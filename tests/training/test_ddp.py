"""DDP on CPU (gloo): two processes train like one, and every sample is seen once per epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from paths import CONFIGS, DEFAULT_CONFIG, REPO_ROOT

pytestmark = pytest.mark.slow

# Two epochs of ML-100k; each evaluation ranks 300 users. Tolerances: DDP keeps per-process
# BatchNorm statistics and dropout streams, so the runs agree closely but not bit for bit.
COMMON = ["--trainer.max_epochs=2", "--data.ranking_max_users=300", "--trainer.enable_progress_bar=false",
          "--registry.enabled=false", "--early_stopping.patience=10"]  # fmt: skip
TOLERANCE = {"val_auc": 0.02, "val_loss": 0.02, "val_ndcg_10": 0.02}


def fit(workdir: Path, *extra: str, config: Path = DEFAULT_CONFIG) -> dict[str, float]:
    workdir.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
           "PYTHONPATH": str(REPO_ROOT / "tests"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    result = subprocess.run(
        [str(Path(sys.executable).with_name("wdrec")), "fit", "--config", str(config), *COMMON, *extra],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("wdrec").experiment_id])
    return run.data.metrics


def test_two_processes_train_like_one_and_see_each_sample_once(tmp_path: Path, data_dir) -> None:
    ledger = ["--trainer.callbacks+=helpers.ledger.SampleLedger", f"--trainer.callbacks.folder={tmp_path / 'ledger'}"]
    single = fit(tmp_path / "single")
    ddp = fit(tmp_path / "ddp", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", *ledger)
    for name, tolerance in TOLERANCE.items():
        assert ddp[name] == pytest.approx(single[name], abs=tolerance), name

    seen = [json.loads((tmp_path / "ledger" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    ranks = [{tuple(pair) for pair in rank} for rank in seen]
    assert all(len(rank) == len(pairs) for rank, pairs in zip(ranks, seen, strict=True))  # no repeat within a rank
    assert not ranks[0] & ranks[1]  # no sample on both ranks
    assert len(ranks[0] | ranks[1]) == 98_114  # every ML-100k L1O training positive, once


def test_a_job_that_averages_its_weights_trains_on_two_processes(tmp_path: Path, data_dir) -> None:
    """The PW job's AveragedWeights deep-copies the module as DDP starts (its optimizer factories
    cannot be copied there, so the copy leaves them out)."""
    metrics = fit(tmp_path / "ddp", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
                  "--trainer.limit_train_batches=40", config=CONFIGS / "movielens100k-ctr.yaml")  # fmt: skip
    assert metrics["val_auc"] > 0.75
