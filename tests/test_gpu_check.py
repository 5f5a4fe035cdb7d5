"""benchmarks/gpu_check.sh in its smoke mode: every step of the GPU session's script, at tiny sizes,
on this machine's device, with mlflow and fastapi unimportable as on the GPU host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO_ROOT

pytestmark = pytest.mark.slow


def test_the_gpu_check_runs_end_to_end_in_smoke_mode(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "GPU_CHECK_SMOKE": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh")], env=env, check=True, timeout=900,
                   capture_output=True)  # fmt: skip

    throughput = json.loads((tmp_path / "train_throughput.json").read_text())["runs"]
    assert [run["resident"] for run in throughput] == [False, True]
    assert all(run["ratio_to_ceiling"] > 0 and run["precision"] == "bf16-mixed" for run in throughput)
    (epoch,) = json.loads((tmp_path / "epoch_100m.json").read_text())["runs"]
    assert epoch["resident"] and epoch["batches_run"] > 0 and epoch["epoch_s"] > 0
    assert "mlflow is not installed" not in (tmp_path / "gpu_check.log").read_text()
