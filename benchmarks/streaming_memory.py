"""Out-of-core data: peak memory of StreamingDataModule as the interaction log grows.

Synthetic interactions are generated into Parquet in chunks (``--chunk`` rows per file,
one child process per chunk, each with its own seed, over one fixed population of users
and items), so no process ever holds the whole log. For each size in ``--rows`` (a prefix
of those files), a fresh child process

1. fits the FeatureSpec in one streaming pass (``setup``),
2. streams one whole epoch through the training loader and the feature assembly
   (read → shuffle buffer → ids to rows → negatives → ``on_after_batch_transfer``):
   everything an epoch does except the network's forward and backward,
3. trains ``WideDeepModule`` for ``--train-steps`` optimizer steps on that loader (the
   whole epoch with ``--train-steps 0``; on this CPU a full epoch of 20M rows would take
   hours, so the default trains a fixed number of steps at every size),

and reports its peak RSS (``getrusage``) after each phase, plus the RSS sampled through
the epoch. Flat memory: the peak does not grow with the rows. The generated files are
deleted at the end (``--keep`` keeps them). Torch runs on one thread, as in data_pipeline.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, write_json  # noqa: E402

N_USERS, N_ITEMS = 200_000, 50_000  # fixed population: only the log grows
BYTES_PER_ROW = 12  # Parquet on disk, measured ~9.2 (user_id, item_id, timestamp); with margin


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def rss_mb() -> int:
    return round(int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)


def generate(workdir: Path, chunk: int, rows: int, seed: int) -> None:
    """One chunk of the log (child process); chunk 0 also writes the users and items tables."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from wdrec.data.io import write_parquet
    from wdrec.data.sources.synthetic import Synthetic

    data = Synthetic(N_USERS, N_ITEMS, rows, seed=seed, with_ratings=False).load(workdir)
    table = pa.Table.from_pandas(data.interactions, preserve_index=False)
    pq.write_table(table, workdir / "log" / f"part-{chunk:04d}.parquet", row_group_size=500_000)
    if chunk == 0:
        write_parquet(data.users, workdir / "users.parquet")
        write_parquet(data.items, workdir / "items.parquet")


def features() -> tuple[list, list]:
    """configs/synthetic.yaml's features without the point-in-time history (in-memory only)."""
    from wdrec.data.features import Cross, Field

    data = yaml.safe_load((REPO_ROOT / "configs" / "synthetic.yaml").read_text())["data"]
    fields = [Field(**f) for f in data["features"] if f.get("kind") != "history"]
    names = {f.name for f in fields}
    return fields, [Cross(**c) for c in data["crosses"] if set(c["fields"]) <= names]


def measure(workdir: Path, files: list[str], args: argparse.Namespace) -> dict:
    """Fit in one pass, stream an epoch, train: in this (child) process."""
    import lightning as L

    from wdrec.data.streaming import StreamingDataModule
    from wdrec.model.widedeep import Architecture
    from wdrec.training.module import WideDeepModule

    torch.set_num_threads(1)
    fields, crosses = features()
    dm = StreamingDataModule(
        files, str(workdir / "users.parquet"), str(workdir / "items.parquet"), fields, crosses,
        negatives=args.negatives, batch_size=args.batch_size, shuffle_buffer=args.shuffle_buffer, seed=0,
    )  # fmt: skip
    started = time.perf_counter()
    dm.setup("fit")
    fit_s = time.perf_counter() - started
    rows, after_fit = dm.summary()["interactions"], peak_rss_mb()

    loader = dm.train_dataloader()
    trace, every = [], max(1, len(loader) // 20)
    started, positives, samples = time.perf_counter(), 0, 0
    for k, batch in enumerate(loader):
        features_ = dm.on_after_batch_transfer(batch, 0)
        positives += int(batch["label"].gt(0).sum())
        samples += len(features_["label"])
        if k % every == 0:
            trace.append(rss_mb())
    stream_s = time.perf_counter() - started
    if positives != rows:
        raise RuntimeError(f"the epoch streamed {positives} positives, the log has {rows} rows")
    after_stream = peak_rss_mb()

    steps = args.train_steps or len(loader)
    model = WideDeepModule(layout=dm.layout, task=dm.task, architecture=Architecture(hidden=[64, 32]))
    trainer = L.Trainer(max_epochs=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    started = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    train_s = time.perf_counter() - started
    return {
        "rows": rows,
        "users": len(dm.users_frame),
        "items": len(dm.items_frame),
        "fit_s": round(fit_s, 1),
        "fit_rows_per_s": round(rows / fit_s),
        "epoch_s": round(stream_s, 1),
        "epoch_rows_per_s": round(rows / stream_s),
        "epoch_samples": samples,
        "train_steps": trainer.global_step,
        "train_epoch_fraction": round(trainer.global_step / len(loader), 4),
        "train_samples_per_s": round(trainer.global_step * args.batch_size / train_s),
        "peak_rss_mb_after_fit": after_fit,
        "peak_rss_mb_after_epoch": after_stream,
        "peak_rss_mb": peak_rss_mb(),
        "rss_trace_mb": trace,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="where to write the results")
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000_000, 10_000_000, 20_000_000])
    parser.add_argument("--chunk", type=int, default=5_000_000, help="rows per generated file (divides every --rows)")
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--negatives", type=int, default=4)
    parser.add_argument("--shuffle-buffer", type=int, default=1_000_000)
    parser.add_argument("--train-steps", type=int, default=200, help="optimizer steps per size; 0 = the whole epoch")
    parser.add_argument("--workdir", type=Path, help="where to write the Parquet files (default: a new /tmp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON task for a child process
    args = parser.parse_args()
    if args.child:
        task = json.loads(args.child)
        if task["do"] == "generate":
            generate(Path(task["workdir"]), task["chunk"], args.chunk, seed=task["chunk"])
        else:
            print(json.dumps(measure(Path(task["workdir"]), task["files"], args)))
        return
    if any(r % args.chunk for r in args.rows):
        sys.exit(f"every --rows must be a multiple of --chunk ({args.chunk})")

    started = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wdrec-streaming-"))
    (workdir / "log").mkdir(parents=True, exist_ok=True)
    need, free = max(args.rows) * BYTES_PER_ROW, shutil.disk_usage(workdir).free
    if need > free // 2:
        sys.exit(f"{workdir}: {free / 2**30:.1f} GiB free; the log needs about {need / 2**30:.1f} GiB (kept under half)")
    try:
        chunks = max(args.rows) // args.chunk
        for chunk in range(chunks):
            run_child(args, {"do": "generate", "workdir": str(workdir), "chunk": chunk})
        generate_s = time.perf_counter() - started
        files = sorted(str(p) for p in (workdir / "log").glob("*.parquet"))
        disk_mb = round(sum(Path(f).stat().st_size for f in files) / 2**20)
        results = []
        for rows in args.rows:
            task = {"do": "measure", "workdir": str(workdir), "files": files[: rows // args.chunk]}
            results.append(json.loads(run_child(args, task).strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    write_json(
        args.json or "benchmarks/results/streaming_memory.json",
        {
            "rows": [r["rows"] for r in results],
            "peak_rss_mb": [r["peak_rss_mb"] for r in results],
            "rows_per_s": [r["epoch_rows_per_s"] for r in results],
            "train_samples_per_s": [r["train_samples_per_s"] for r in results],
            "train_steps": [r["train_steps"] for r in results],
            "runs": results,
            "setup": {"n_users": N_USERS, "n_items": N_ITEMS, "chunk": args.chunk, "batch_size": args.batch_size,
                      "negatives": args.negatives, "shuffle_buffer": args.shuffle_buffer, "num_workers": 0,
                      "hidden": [64, 32], "largest_log_mb": disk_mb},  # fmt: skip
            "generate_s": round(generate_s, 1),
            "total_s": round(time.perf_counter() - started, 1),
        },
        sys.argv,
    )


def run_child(args: argparse.Namespace, task: dict) -> str:
    command = [sys.executable, __file__, "--child", json.dumps(task), "--chunk", str(args.chunk),
               "--batch-size", str(args.batch_size), "--negatives", str(args.negatives),
               "--shuffle-buffer", str(args.shuffle_buffer), "--train-steps", str(args.train_steps)]  # fmt: skip
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"{task['do']} failed:\n{child.stderr[-3000:]}")
    return child.stdout


if __name__ == "__main__":
    main()
