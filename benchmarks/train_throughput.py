"""Training throughput: ``wdrec fit`` against a plain PyTorch loop, same model, data and batch size.

Both loops run in this process, one after the other, on the same machine state:

- ``wdrec``: the real CLI (``wdrec fit --config ...``: LightningModule, JointOptimizer,
  callbacks, progress off, validation off) timed by a callback from step ``--warmup`` on;
- ``plain``: a hand-written loop over the same data module batches (same feature
  assembly), the same network and the same optimizers, no Lightning.

``ratio`` = wdrec / plain samples per second; the target is >= 0.8.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, write_json  # noqa: E402

from wdrec.cli import run  # noqa: E402


class StepTimer(L.Callback):
    """Samples per second over the steps after ``warmup``."""

    def __init__(self, warmup: int = 20) -> None:
        self.warmup, self.samples, self.start = warmup, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx >= self.warmup:
            self.samples += len(batch["label"])
            self.elapsed = time.perf_counter() - self.start


def wdrec_fit(config: Path, steps: int, warmup: int, precision: str, workdir: Path) -> tuple[float, object]:
    timer = StepTimer(warmup)
    cli = run(
        ["--config", str(config), "--trainer.logger=false", f"--trainer.max_steps={steps}",
         "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
         f"--trainer.precision={precision}", f"--checkpoint.dirpath={workdir}", "--registry.enabled=false",
         "--early_stopping.check_on_train_epoch_end=false"],
        subcommand=False,
    )  # fmt: skip
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    return timer.samples / timer.elapsed, cli


def plain_loop(cli, steps: int, warmup: int, precision: str) -> float:  # noqa: ANN001
    """The same work without Lightning: batches, features, forward, loss, backward, step."""
    torch.manual_seed(0)
    hparams = {k: v for k, v in cli.model.hparams.items() if not k.startswith("_")}
    datamodule, module = cli.datamodule, type(cli.model)(**hparams)
    module.wide_optimizer, module.deep_optimizer = cli.model.wide_optimizer, cli.model.deep_optimizer
    net, optimizer = module.net.train(), module.configure_optimizers()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
    samples, start, step = 0, 0.0, 0
    while step < steps:
        for batch in datamodule.train_dataloader():
            if step == warmup:
                start = time.perf_counter()
            batch = datamodule.on_after_batch_transfer(batch, 0)
            with autocast:
                loss = F.binary_cross_entropy_with_logits(net(batch).float(), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step >= warmup:
                samples += len(batch["label"])
            step += 1
            if step == steps:
                break
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "movielens100k.yaml")
    parser.add_argument("--steps", type=int, default=220)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        wdrec_rate, cli = wdrec_fit(args.config, args.steps, args.warmup, args.precision, Path(workdir))
        plain_rate = plain_loop(cli, args.steps, args.warmup, args.precision)
    write_json(
        args.json,
        {
            "wdrec_samples_per_s": round(wdrec_rate),
            "plain_torch_samples_per_s": round(plain_rate),
            "ratio": round(wdrec_rate / plain_rate, 3),
            "batch_size": cli.datamodule.batch_size,
            "precision": args.precision,
            "steps_timed": args.steps - args.warmup,
        },
        sys.argv,
    )


if __name__ == "__main__":
    main()
