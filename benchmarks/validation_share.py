"""Validation's share of a training epoch: what evaluating costs next to what training does.

For each job the real CLI runs (``wdrec fit --config ...``: LightningModule, callbacks,
checkpoints in a temporary directory; no tracking, no registry, no sanity check) for
``--epochs`` epochs, and a callback times each epoch's training batches (from the epoch's
start to its last training batch: loading, assembling, steps) and its validation (from
its start to its end: pointwise loss and AUC, and the full ranking when the job ranks).
``share`` = validation / (training + validation), per epoch; the figure is the median
over the epochs after the first (the first pays for first-use warm-ups). Targets: at most
35% for the default job (L1O, ranking the whole catalogue), 20% for the PW job.

    python benchmarks/validation_share.py --json benchmarks/results/validation_share.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, write_json  # noqa: E402

from wdrec.job import run  # noqa: E402

JOBS = {
    "default": (REPO_ROOT / "configs" / "movielens100k.yaml", 0.35),
    "pw": (REPO_ROOT / "configs" / "movielens100k-ctr.yaml", 0.20),
}


class EpochTimer(L.Callback):
    """Seconds of each epoch's training batches and of its validation (sanity check left out), and
    the epoch's training samples (benchmarks/peers.py reads training samples/s from it)."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []
        self.samples: list[int] = []
        self._samples = 0
        self.metrics: list[dict[str, float]] = []  # each validation's metrics: the old and new paths must agree
        self._epoch_start = self._last_batch_end = self._val_start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._epoch_start = self._last_batch_end = time.perf_counter()
        self._samples = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._last_batch_end = time.perf_counter()
        self._samples += len(batch["label"])

    def on_validation_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not trainer.sanity_checking:
            self.train.append(self._last_batch_end - self._epoch_start)
            self.samples.append(self._samples)
            self.val.append(time.perf_counter() - self._val_start)
            self.metrics.append({k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if k.startswith("val_")})


def measure(config: Path, epochs: int, target: float) -> dict:
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        cli = run(
            [f"--config={config}", "--trainer.logger=false", "--registry.enabled=false", f"--trainer.max_epochs={epochs}",
             "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
             f"--checkpoint.dirpath={workdir}", f"--last_checkpoint.dirpath={workdir}"],
            subcommand=False,
            callbacks=[timer],
        )  # fmt: skip
        cli.trainer.fit(cli.model, cli.datamodule)
        wall = time.perf_counter() - started
    shares = [v / (t + v) for t, v in zip(timer.train, timer.val, strict=True)]
    share = statistics.median(shares[1:] or shares)
    result = {
        "config": str(config.relative_to(REPO_ROOT)),
        "epochs": len(shares),
        "ranking": bool(cli.datamodule.full_ranking),
        "train_s": [round(t, 2) for t in timer.train],
        "val_s": [round(v, 2) for v in timer.val],
        "shares": [round(s, 3) for s in shares],
        "share": round(share, 3),
        "target": target,
        "met": share <= target,
        "wall_s_incl_setup": round(wall, 1),
        "val_metrics": timer.metrics,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per job (the first is left out of the median)")
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    args = parser.parse_args()
    results = {}
    for name in args.jobs:
        config, target = JOBS[name]
        results[name] = measure(config, args.epochs, target)
        print(name, results[name], flush=True)
        write_json(args.json, results, sys.argv)  # after each job


if __name__ == "__main__":
    main()
