"""Batch recommendations (``wdrec recommend``) against the per-user path, in users per second.

For each catalogue size (default 1k, 100k and 1M items): a short real ``wdrec fit`` on
``Synthetic`` data with the features of ``configs/synthetic.yaml`` (2,000 users; the same
fits as ``serve_latency.py``'s catalogue sweep, whose ``synthetic_fit`` this reuses), the
bundle loaded as ``wdrec recommend`` and ``wdrec-serve`` load it (``serving.loader.load_model``:
precomputed scorer verified), then, over the same seeded sample of known users and in this
process:

- **batch**: :class:`serving.batch.BatchRecommender` (blocks of users scored together,
  ``--batch-users`` as the command's default), top 10 with seen items left out;
- **per user**: ``serving.recommender.recommend`` once per user: the HTTP path without HTTP,
  what ``POST /v1/recommend`` computes.

``ratio`` is batch users/s over per-user users/s, measured in the same run (``ratio_cpu``: the
same in CPU time); both use ``--threads`` torch threads (default 1, as ``wdrec-serve``'s default
``WDREC_TORCH_THREADS``), and they take turns on slices of the sample (``--rounds``), so that
the shared machine's drifting load weighs on both alike.
Each user's two top-10 lists are compared (``same_top_k``: the share that are equal, item for
item). The sample is every known user up to ``PAIRS`` scored (user, item) pairs per path: all
2,000 users at 1k items, 100 at 100k, 10 at 1M. Load time (the items' half of the network
precomputed, the known users' parts, verification) is reported apart, not in users/s.

Time: the 1M-item fit dominates (about 4 minutes on the busy 2-core machine). ``--workdir DIR
--reuse-models`` measures the models an earlier run left in DIR again, without training.

    python benchmarks/batch_recommend.py --json benchmarks/results/batch_recommend.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402
from serve_latency import model_arguments, model_workdir, synthetic_fit, versions  # noqa: E402

from serving.batch import BatchRecommender, Users  # noqa: E402
from serving.loader import load_model  # noqa: E402
from serving.recommender import recommend  # noqa: E402
from serving.served_model import ServedModel  # noqa: E402

K = 10
PAIRS = 10_000_000  # scored (user, item) pairs per path and catalogue size: sets the sample of users


def log(message: str) -> None:
    print(f"[batch_recommend {time.strftime('%H:%M:%S')}] {message}", flush=True)


def timed(work: Callable[[], dict[str, list[str]]]) -> tuple[dict[str, list[str]], float, float]:
    """Each user's top K item ids, wall seconds and CPU seconds of ``work()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    found = work()
    return found, time.perf_counter() - wall, time.process_time() - cpu


def batch_top(model: ServedModel, users: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for batch in BatchRecommender(model, K).batches(Users(users)):
        for user, item in zip(batch.column("user_id").to_pylist(), batch.column("item_id").to_pylist(), strict=True):
            found.setdefault(user, []).append(item)
    return found


def per_user_top(model: ServedModel, users: list[str]) -> dict[str, list[str]]:
    return {user: [item["item_id"] for item in recommend(model, user, K).items] for user in users}


def measure(bundle: Path, seed: int, rounds: int) -> dict:
    start = time.perf_counter()
    model = load_model(str(bundle))
    load_s = time.perf_counter() - start
    known = list(model.user_rows)
    n_items = model.catalogue.size
    sample = random.Random(seed).sample(known, min(len(known), max(rounds, PAIRS // n_items)))
    batch_top(model, sample[:1])  # warm-up: first-call allocations
    per_user_top(model, sample[:1])
    # The paths take turns on slices of the sample (each going first in every other round), so that
    # the load of the shared machine, which drifts over minutes, weighs on both alike.
    paths = {"batch": batch_top, "per_user": per_user_top}
    found: dict[str, dict[str, list[str]]] = {name: {} for name in paths}
    wall, cpu = dict.fromkeys(paths, 0.0), dict.fromkeys(paths, 0.0)
    for turn in range(rounds):
        users = sample[turn::rounds]
        for name in list(paths)[:: 1 if turn % 2 == 0 else -1]:
            got, seconds, cpu_seconds = timed(lambda work=paths[name], users=users: work(model, users))
            found[name] |= got
            wall[name] += seconds
            cpu[name] += cpu_seconds
    entry = {
        "n_items": n_items,
        "users": len(sample),
        "batch_users": BatchRecommender(model, K).batch_users,
        "batch_users_per_s": round(len(sample) / wall["batch"], 2),
        "per_user_users_per_s": round(len(sample) / wall["per_user"], 2),
        "ratio": round(wall["per_user"] / wall["batch"], 2),
        "batch_cpu_ms_per_user": round(1000 * cpu["batch"] / len(sample), 3),
        "per_user_cpu_ms_per_user": round(1000 * cpu["per_user"] / len(sample), 3),
        "ratio_cpu": round(cpu["per_user"] / cpu["batch"], 2),
        "same_top_k": round(sum(found["batch"][u] == found["per_user"][u] for u in sample) / len(sample), 4),
        "fast_path": model.info.fast_path,
        "load_s": round(load_s, 1),
    }
    log(f"{n_items:,} items, {len(sample)} users: batch {entry['batch_users_per_s']} users/s, per user "
        f"{entry['per_user_users_per_s']} users/s, ratio {entry['ratio']} (CPU time {entry['ratio_cpu']}), "
        f"same top {K} {entry['same_top_k']}")  # fmt: skip
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--catalogue", type=int, nargs="+", default=[1_000, 100_000, 1_000_000], help="synthetic catalogue sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both paths")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sample of users")
    parser.add_argument("--rounds", type=int, default=4, help="turns the two paths take on slices of the sample")
    model_arguments(parser, "keep the models here", "measure the models a previous run trained there")
    args = parser.parse_args()
    began = time.perf_counter()
    results: dict = {"k": K, "exclude_seen": True, "threads": args.threads, "rounds": args.rounds, "catalogue": {}, "setup_seconds": {}}
    with contextlib.ExitStack() as stack:
        workdir = model_workdir(parser, args, stack, "batch_recommend-")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"  # the fits' own store
        for n_items in args.catalogue:
            log(f"catalogue of {n_items:,} items: short fit on synthetic data ...")
            start = time.perf_counter()
            directory = workdir / f"catalogue-{n_items}"
            bundle = synthetic_fit(directory, n_items, args.reuse_models)
            results["setup_seconds"][f"fit_catalogue_{n_items}"] = round(time.perf_counter() - start, 1)
            torch.set_num_threads(args.threads)  # after the fit, which may change it
            results["catalogue"][str(n_items)] = measure(bundle, args.seed, args.rounds)
            shutil.rmtree(directory / "checkpoints", ignore_errors=True)  # ~1 GB for 1M items, with optimizer state
            gc.collect()
    results["versions"] = versions()
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    log(f"done in {results['total_seconds']} s")
    write_json(args.json, results, sys.argv)


if __name__ == "__main__":
    main()
