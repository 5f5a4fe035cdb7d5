"""Per-step overhead: ``wdrec fit`` against a plain PyTorch loop, whole epochs, alternating pairs.

One run of either loop moves by up to half from one minute to the next on a shared 2-core
machine, so a single ratio cannot tell 0.8 from 1.0. Here, per config and batch size, the
two loops run in ``--pairs`` pairs, alternating which goes first, and the reported figure is
the median of the per-pair ratios with its spread (min, max).

Both loops (``train_throughput.wdrec_fit``, ``train_throughput.plain_loop``) train the same
network with the same optimizers (FTRL + Adam) on the same index batches and feature
assembly, validation off on both sides, and are timed over whole epochs: from the first
step of epoch 2 to the end of the last epoch (epoch 1 warms up allocations and caches).
``wdrec`` is the real CLI with its callbacks (checkpoints, diagnostics, plots, early
stopping) and per-step metric logging; MLflow tracking is off on both sides.

    python benchmarks/step_overhead.py --json benchmarks/results/step_overhead.json \\
        --config configs/movielens100k-ctr.yaml --config configs/movielens100k.yaml
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, write_json  # noqa: E402
from train_throughput import plain_loop, wdrec_fit  # noqa: E402

from wdrec.job import run  # noqa: E402


def steps_per_epoch(config: Path, batch_size: int) -> tuple[int, object]:
    """Training batches per epoch at ``batch_size``, and a CLI (not fitted) whose data and
    hyperparameters the plain loop reuses."""
    cli = run([f"--config={config}", f"--data.batch_size={batch_size}", "--trainer.logger=false"], subcommand=False)
    cli.datamodule.setup("fit")
    return len(cli.datamodule.train_dataloader()), cli


def pairs(config: Path, batch_size: int, n_pairs: int, epochs: int) -> dict:
    steps, setup_cli = steps_per_epoch(config, batch_size)
    total, warmup = steps * epochs, steps  # epochs 2..E timed, whole
    wdrec_rates, plain_rates = [], []
    for pair in range(n_pairs):
        order = ("wdrec", "plain") if pair % 2 == 0 else ("plain", "wdrec")
        for side in order:
            if side == "wdrec":
                with tempfile.TemporaryDirectory() as workdir:
                    timer, _ = wdrec_fit([config], total, warmup, "32-true", False, Path(workdir),
                                         overrides=[f"--data.batch_size={batch_size}"])  # fmt: skip
                wdrec_rates.append(timer.samples / timer.elapsed)
            else:
                plain_rates.append(plain_loop(setup_cli, total, warmup, "32-true", False)["samples_per_s"])
        print(f"{config.name} batch {batch_size} pair {pair + 1}: wdrec {wdrec_rates[-1]:,.0f}/s, "
              f"plain {plain_rates[-1]:,.0f}/s, ratio {wdrec_rates[-1] / plain_rates[-1]:.3f}", flush=True)  # fmt: skip
    ratios = [w / p for w, p in zip(wdrec_rates, plain_rates, strict=True)]
    return {
        "config": str(config.relative_to(REPO_ROOT) if config.is_relative_to(REPO_ROOT) else config),
        "batch_size": batch_size,
        "steps_per_epoch": steps,
        "epochs_timed": epochs - 1,
        "pairs": n_pairs,
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "wdrec_samples_per_s_median": round(statistics.median(wdrec_rates)),
        "plain_samples_per_s_median": round(statistics.median(plain_rates)),
        "ratios": [round(r, 3) for r in ratios],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--config", type=Path, action="append", help="job configs, each measured on its own")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--pairs", type=int, default=5, help="wdrec/plain pairs per config and batch size")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; all but the first are timed")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch warms up and is not timed")
    configs = [c.resolve() for c in args.config or [REPO_ROOT / "configs" / "movielens100k-ctr.yaml"]]
    results = []
    for config in configs:
        for batch_size in args.batch_sizes:
            results.append(pairs(config, batch_size, args.pairs, args.epochs))
            write_json(args.json, {"results": results}, sys.argv)  # after each configuration


if __name__ == "__main__":
    main()
