"""Training throughput: ``wdrec fit`` against a plain PyTorch loop, same model, data and batch size.

For each precision (and with/without ``torch.compile``) both loops run in this process, one
after the other, on the same machine state:

- ``wdrec``: the real CLI (``wdrec fit --config ...``: LightningModule, JointOptimizer,
  callbacks, progress off, validation off, no tracking) timed by a callback from step
  ``--warmup`` on;
- ``plain``: a hand-written loop over the same data module batches (same transfer and
  feature assembly), the same network and the same optimizers, autocast and, for
  ``16-mixed``, a GradScaler; no Lightning.

``ratio`` = wdrec / plain samples per second; the target is >= 0.8. On a GPU each run also
reports ``data_wait_fraction`` (share of wall time between the end of one training step and
the start of the next: fetching, transferring and assembling the batch) and the mean GPU
utilisation sampled by NVML while the timed steps ran.

CPU:  python benchmarks/train_throughput.py --json benchmarks/results/train_throughput.json
GPU:  python benchmarks/train_throughput.py --json out.json --config configs/movielens100k.yaml \\
          --config configs/gpu.yaml --precision 32-true bf16-mixed 16-mixed --compile off on
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, write_json  # noqa: E402

from wdrec.job import run  # noqa: E402
from wdrec.model.widedeep import Architecture  # noqa: E402


class StepTimer(L.Callback):
    """Samples per second over the steps after ``warmup``, and the time spent between steps."""

    def __init__(self, warmup: int = 20) -> None:
        self.warmup, self.samples, self.start, self.elapsed, self.waiting = warmup, 0, 0.0, 0.0, 0.0
        self.last_end: float | None = None
        self.gpu = GpuUtilisation()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        step = trainer.global_step
        if step == self.warmup:
            _synchronize()
            self.start = time.perf_counter()
            self.gpu.start()
        elif step > self.warmup and self.last_end is not None:
            self.waiting += time.perf_counter() - self.last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step > self.warmup:
            self.samples += len(batch["label"])
            self.last_end = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        _synchronize()
        self.elapsed = time.perf_counter() - self.start
        self.gpu.stop()


class GpuUtilisation:
    """Mean NVML utilisation of GPU 0, sampled every 50 ms on a thread (None without a GPU)."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if torch.cuda.is_available():
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(torch.cuda.utilization(0))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def wdrec_fit(configs: list[Path], steps: int, warmup: int, precision: str, compile_net: bool, workdir: Path):  # noqa: ANN201
    timer = StepTimer(warmup)
    cli = run(
        [*(f"--config={config}" for config in configs), "--trainer.logger=false", f"--trainer.max_steps={steps}",
         "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
         "--trainer.enable_progress_bar=false", f"--trainer.precision={precision}", f"--model.compile={compile_net}",
         f"--checkpoint.dirpath={workdir}", f"--last_checkpoint.dirpath={workdir}", "--registry.enabled=false",
         "--early_stopping.check_on_train_epoch_end=false"],
        subcommand=False,
    )  # fmt: skip
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    return timer, cli


def plain_loop(cli, steps: int, warmup: int, precision: str, compile_net: bool) -> dict[str, float | None]:  # noqa: ANN001
    """The same work without Lightning: batches, transfer, features, forward, loss, backward, step."""
    torch.manual_seed(0)
    device = cli.trainer.strategy.root_device
    hparams = {k: v for k, v in cli.model.hparams.items() if not k.startswith("_") and k != "compile"}
    hparams["architecture"] = Architecture(**hparams["architecture"])  # kept as plain values in hparams
    datamodule, module = cli.datamodule, type(cli.model)(**hparams)
    module.wide_optimizer, module.deep_optimizer = cli.model.wide_optimizer, cli.model.deep_optimizer
    net = module.net.to(device).train()
    optimizer = module.configure_optimizers()
    if compile_net:
        net.compile()
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    gpu = GpuUtilisation()
    samples, start, waiting, step, last_end = 0, 0.0, 0.0, 0, None
    while step < steps:
        for batch in datamodule.train_dataloader():
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            batch = datamodule.on_after_batch_transfer(batch, 0)
            if step == warmup:
                _synchronize()
                start = time.perf_counter()
                gpu.start()
            elif step > warmup and last_end is not None:
                waiting += time.perf_counter() - last_end
            with autocast:
                logits = net(batch)
            loss = F.binary_cross_entropy_with_logits(logits.float(), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            if step > warmup:
                samples += len(batch["label"])
                last_end = time.perf_counter()
            if step == steps:
                break
    _synchronize()
    elapsed = time.perf_counter() - start
    gpu.stop()
    return {
        "samples_per_s": samples / elapsed,
        "data_wait_fraction": waiting / elapsed,
        "gpu_utilisation": gpu.mean,
    }


def measure(configs: list[Path], steps: int, warmup: int, precision: str, compile_net: bool) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        timer, cli = wdrec_fit(configs, steps, warmup, precision, compile_net, Path(workdir))
        wdrec_total = time.perf_counter() - started
        plain = plain_loop(cli, steps, warmup, precision, compile_net)
    wdrec_rate = timer.samples / timer.elapsed
    result = {
        "precision": precision,
        "compile": compile_net,
        "batch_size": cli.datamodule.batch_size,
        "steps_timed": steps - warmup,
        "wdrec_samples_per_s": round(wdrec_rate),
        "plain_torch_samples_per_s": round(plain["samples_per_s"]),
        "ratio": round(wdrec_rate / plain["samples_per_s"], 3),
        "wdrec_data_wait_fraction": round(timer.waiting / timer.elapsed, 3),
        "plain_data_wait_fraction": round(plain["data_wait_fraction"], 3),
        "wdrec_gpu_utilisation": timer.gpu.mean,
        "plain_gpu_utilisation": plain["gpu_utilisation"],
        "wdrec_wall_s_incl_setup": round(wdrec_total, 1),
    }
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument(
        "--config", type=Path, action="append", help="job config(s), in order (default: ML-100k)"
    )
    parser.add_argument("--steps", type=int, default=220)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--precision", nargs="+", default=["32-true"], choices=["32-true", "bf16-mixed", "16-mixed"]
    )
    parser.add_argument(
        "--compile", nargs="+", default=["off"], choices=["off", "on"], help="torch.compile the network"
    )
    args = parser.parse_args()
    configs = args.config or [REPO_ROOT / "configs" / "movielens100k.yaml"]
    runs = []
    for mode in args.compile:
        for precision in args.precision:
            runs.append(measure(configs, args.steps, args.warmup, precision, mode == "on"))
            write_json(
                args.json, {"runs": runs, "configs": [str(c) for c in configs]}, sys.argv
            )  # after each run


if __name__ == "__main__":
    main()
