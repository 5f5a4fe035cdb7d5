"""Training throughput: ``wdrec fit`` against a plain PyTorch loop and against a ceiling, same model and batch size.

For each precision, with/without ``torch.compile`` and with the data path on the host or
resident on the device (``--data.resident``), three loops run in this process, one after the
other, on the same machine state:

- ``wdrec``: the real CLI (``wdrec fit --config ...``: LightningModule, JointOptimizer,
  callbacks, progress off, validation off, no tracking) timed by a callback from step
  ``--warmup`` on;
- ``plain``: a hand-written loop over the same data module batches (same transfer and
  feature assembly), the same network and the same optimizers, autocast and, for
  ``16-mixed``, a GradScaler; no Lightning;
- ``ceiling``: the plain loop over feature batches assembled beforehand and kept on the
  device, one indexed per step: no data path at all, the most any data path could give.

``ratio`` = wdrec / plain samples per second (the target is >= 0.8); ``ratio_to_ceiling`` =
wdrec / ceiling. On a GPU each loop also reports its ``data_wait_fraction`` (share of wall
time between the end of one training step and the start of the next: fetching, transferring
and assembling the batch) and the mean GPU utilisation sampled by NVML while the timed steps ran.

CPU:  python benchmarks/train_throughput.py --json benchmarks/results/train_throughput.json
GPU:  python benchmarks/train_throughput.py --json out.json --config configs/movielens100k.yaml \\
          --config configs/gpu.yaml --precision 32-true bf16-mixed 16-mixed --compile off on --resident off on
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, write_json  # noqa: E402

from wdrec.data.batches import Batch, ResidentBatches  # noqa: E402
from wdrec.job import run  # noqa: E402
from wdrec.model.widedeep import Architecture  # noqa: E402
from wdrec.training.callbacks import AveragedWeights  # noqa: E402

CEILING_POOL = 32  # feature batches the ceiling keeps on the device and cycles through
RESIDENT = {"default": None, "off": False, "on": True}


class StepTimer(L.Callback):
    """Samples per second over the steps after ``warmup``, and the time spent between steps."""

    def __init__(self, warmup: int = 20) -> None:
        self.warmup, self.samples, self.start, self.elapsed, self.waiting = warmup, 0, 0.0, 0.0, 0.0
        self.setup_s = 0.0  # building the job before fit (wdrec_fit sets it)
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


def wdrec_fit(  # noqa: ANN201
    configs: list[Path],
    steps: int,
    warmup: int,
    precision: str,
    compile_net: bool,
    workdir: Path,
    resident: bool | None = None,
    overrides: Sequence[str] = (),
    callbacks: Sequence[L.Callback] = (),
):
    """The real CLI, timed by a :class:`StepTimer`; ``timer.setup_s`` is the time to build it (data included).

    ``resident``: ``--data.resident`` (None: the data module's default); ``overrides``: more
    arguments, after the others; ``callbacks``: more callbacks for the fit.
    """
    timer = StepTimer(warmup)
    started = time.perf_counter()
    cli = run(
        [*(f"--config={config}" for config in configs), "--trainer.logger=false", f"--trainer.max_steps={steps}",
         "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
         "--trainer.enable_progress_bar=false", f"--trainer.precision={precision}", f"--model.compile={compile_net}",
         f"--checkpoint.dirpath={workdir}", f"--last_checkpoint.dirpath={workdir}", "--registry.enabled=false",
         "--early_stopping.check_on_train_epoch_end=false",
         *([] if resident is None else [f"--data.resident={str(resident).lower()}"]), *overrides],
        subcommand=False,
        callbacks=[timer, *callbacks],
    )  # fmt: skip
    timer.setup_s = time.perf_counter() - started
    cli.trainer.fit(cli.model, cli.datamodule)
    return timer, cli


def plain_loop(cli, steps: int, warmup: int, precision: str, compile_net: bool) -> dict[str, float | None]:  # noqa: ANN001
    """The same work without Lightning: batches, transfer, features, forward, loss, backward, step."""
    return _timed_loop(cli, _loader_batches(cli), steps, warmup, precision, compile_net)


def ceiling_loop(cli, steps: int, warmup: int, precision: str, compile_net: bool) -> dict[str, float | None]:  # noqa: ANN001
    """The plain loop with no data path: feature batches assembled beforehand, resident, indexed per step."""
    return _timed_loop(cli, _resident_pool(cli, CEILING_POOL), steps, warmup, precision, compile_net)


def _loader_batches(cli) -> Iterator[Batch]:  # noqa: ANN001
    """The data module's training batches, epoch after epoch, moved and assembled as Lightning does."""
    device, datamodule = cli.trainer.strategy.root_device, cli.datamodule
    while True:
        for batch in datamodule.train_dataloader():
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            yield datamodule.on_after_batch_transfer(batch, 0)


def _resident_pool(cli, size: int) -> Iterator[Batch]:  # noqa: ANN001
    """``size`` feature batches of one shape, stacked on the device, then one view of them per step."""
    batches = list(itertools.islice(_loader_batches(cli), size))
    rows = len(batches[0]["label"])  # a host-path batch that lost negatives (or the last one) is left out
    pool = {key: torch.stack([b[key] for b in batches if len(b["label"]) == rows]) for key in batches[0]}
    for step in itertools.count():
        yield {key: values[step % len(pool["label"])] for key, values in pool.items()}


def _timed_loop(  # noqa: ANN001
    cli, batches: Iterator[Batch], steps: int, warmup: int, precision: str, compile_net: bool
) -> dict[str, float | None]:
    """Forward, loss, backward and step over ``batches`` on a fresh copy of the job's network."""
    torch.manual_seed(0)
    device = cli.trainer.strategy.root_device
    hparams = {k: v for k, v in cli.model.hparams.items() if not k.startswith("_") and k != "compile"}
    hparams["architecture"] = Architecture(**hparams["architecture"])  # kept as plain values in hparams
    module = type(cli.model)(**hparams)
    module.wide_optimizer, module.deep_optimizer = cli.model.wide_optimizer, cli.model.deep_optimizer
    net = module.net.to(device).train()
    optimizer = module.configure_optimizers()
    if compile_net:
        net.compile()
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    # A job that averages its weights (AveragedWeights) pays for it every step: so does the plain
    # loop, the way torch's own docs write it.
    averaging = next((c for c in cli.trainer.callbacks if isinstance(c, AveragedWeights)), None)
    average = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(averaging.decay), use_buffers=True) if averaging else None
    gpu = GpuUtilisation()
    samples, start, waiting, last_end = 0, 0.0, 0.0, None
    for step, batch in enumerate(itertools.islice(batches, steps)):
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
        if average is not None:
            average.update_parameters(net)
        if step + 1 > warmup:
            samples += len(batch["label"])
            last_end = time.perf_counter()
    _synchronize()
    elapsed = time.perf_counter() - start
    gpu.stop()
    return {
        "samples_per_s": samples / elapsed,
        "data_wait_fraction": waiting / elapsed,
        "gpu_utilisation": gpu.mean,
    }


def measure(configs: list[Path], steps: int, warmup: int, precision: str, compile_net: bool, resident: bool | None = None) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        timer, cli = wdrec_fit(configs, steps, warmup, precision, compile_net, Path(workdir), resident)
        wdrec_total = time.perf_counter() - started
        plain = plain_loop(cli, steps, warmup, precision, compile_net)
        ceiling = ceiling_loop(cli, steps, warmup, precision, compile_net)
    wdrec_rate = timer.samples / timer.elapsed
    result = {
        "precision": precision,
        "compile": compile_net,
        "resident": isinstance(cli.trainer.train_dataloader, ResidentBatches),
        "batch_size": cli.datamodule.batch_size,
        "steps_timed": steps - warmup,
        "wdrec_samples_per_s": round(wdrec_rate),
        "plain_torch_samples_per_s": round(plain["samples_per_s"]),
        "ceiling_samples_per_s": round(ceiling["samples_per_s"]),
        "ratio": round(wdrec_rate / plain["samples_per_s"], 3),
        "ratio_to_ceiling": round(wdrec_rate / ceiling["samples_per_s"], 3),
        "plain_ratio_to_ceiling": round(plain["samples_per_s"] / ceiling["samples_per_s"], 3),
        "wdrec_data_wait_fraction": round(timer.waiting / timer.elapsed, 3),
        "plain_data_wait_fraction": round(plain["data_wait_fraction"], 3),
        "ceiling_data_wait_fraction": round(ceiling["data_wait_fraction"], 3),
        "wdrec_gpu_utilisation": timer.gpu.mean,
        "plain_gpu_utilisation": plain["gpu_utilisation"],
        "ceiling_gpu_utilisation": ceiling["gpu_utilisation"],
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
    parser.add_argument(
        "--resident", nargs="+", default=["default"], choices=["default", "off", "on"],
        help="--data.resident: training batches built on the device (default: on for CUDA)",
    )  # fmt: skip
    args = parser.parse_args()
    configs = args.config or [REPO_ROOT / "configs" / "movielens100k.yaml"]
    runs = []
    for resident, mode, precision in itertools.product(args.resident, args.compile, args.precision):
        runs.append(measure(configs, args.steps, args.warmup, precision, mode == "on", RESIDENT[resident]))
        write_json(args.json, {"runs": runs, "configs": [str(c) for c in configs]}, sys.argv)  # after each run


if __name__ == "__main__":
    main()
