"""One training epoch at scale: ``wdrec fit`` over synthetic interactions, its setup and epoch time.

The job is the real CLI (as in ``train_throughput.py``: no validation, no tracking), over a
:class:`~wdrec.data.sources.synthetic.Synthetic` log of the size asked for. Reports the time to
build the job (generating the log, splitting it, fitting and encoding features, the timeline
and the sampler), the epoch's wall time, samples per second after ``--warmup`` steps, and
peak host and GPU memory. ``--max-time`` caps the epoch (Lightning's ``max_time``): a cut epoch
reports the batches it ran and its projected full time.

GPU (benchmarks/gpu_check.sh): python benchmarks/epoch_time.py --json out.json \\
    --config configs/synthetic.yaml --config configs/gpu.yaml \\
    --users 1000000 --items 200000 --interactions 100000000
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, write_json  # noqa: E402
from train_throughput import RESIDENT, _synchronize, wdrec_fit  # noqa: E402

from wdrec.data.batches import ResidentBatches  # noqa: E402


class EpochTimer(L.Callback):
    """Wall time of the first training epoch, and how many of its batches ran."""

    def __init__(self) -> None:
        self.start, self.seconds, self.batches = 0.0, 0.0, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        print(f"job built; an epoch of {trainer.num_training_batches} batches starts", flush=True)  # for a cut log
        _synchronize()
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.batches = batch_idx + 1

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        _synchronize()
        self.seconds = time.perf_counter() - self.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--config", type=Path, action="append", help="job config(s), in order (default: synthetic)")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--interactions", type=int, default=100_000_000)
    parser.add_argument("--precision", default="bf16-mixed", choices=["32-true", "bf16-mixed", "16-mixed"])
    parser.add_argument("--compile", default="off", choices=["off", "on"], help="torch.compile the network")
    parser.add_argument("--resident", default="default", choices=list(RESIDENT), help="--data.resident")
    parser.add_argument("--batch-size", type=int, help="--data.batch_size (default: the config's)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--max-time", default="00:00:08:00", help="cap on the epoch, DD:HH:MM:SS")
    args = parser.parse_args()
    configs = args.config or [REPO_ROOT / "configs" / "synthetic.yaml"]
    source = "--data.source.init_args."
    overrides = [f"{source}n_users={args.users}", f"{source}n_items={args.items}",
                 f"{source}n_interactions={args.interactions}", "--trainer.max_epochs=1",
                 f"--trainer.max_time={args.max_time}",
                 *([f"--data.batch_size={args.batch_size}"] if args.batch_size else [])]  # fmt: skip
    epoch = EpochTimer()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as workdir:
        timer, cli = wdrec_fit(configs, -1, args.warmup, args.precision, args.compile == "on", Path(workdir),
                               RESIDENT[args.resident], overrides, callbacks=[epoch])  # fmt: skip
    per_epoch = len(cli.trainer.train_dataloader)
    result = {
        "users": args.users,
        "items": args.items,
        "interactions": args.interactions,
        "train_rows": len(cli.datamodule.rows["train"]["label"]),
        "precision": args.precision,
        "compile": args.compile == "on",
        "resident": isinstance(cli.trainer.train_dataloader, ResidentBatches),
        "batch_size": cli.datamodule.batch_size,
        "setup_s": round(timer.setup_s, 1),
        "batches_per_epoch": per_epoch,
        "batches_run": epoch.batches,
        "epoch_s": round(epoch.seconds, 1),
        "epoch_s_projected": round(epoch.seconds * per_epoch / max(1, epoch.batches), 1),
        "samples_per_s": round(timer.samples / timer.elapsed) if timer.elapsed else None,
        "data_wait_fraction": round(timer.waiting / timer.elapsed, 3) if timer.elapsed else None,
        "gpu_utilisation": timer.gpu.mean,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
    }
    write_json(args.json, {"runs": [result], "configs": [str(c) for c in configs]}, sys.argv)


if __name__ == "__main__":
    main()
