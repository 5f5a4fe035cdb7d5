"""Two-stage retrieval on a trained model: recall of the candidate stage and the time it saves.

For every known user of the bundle (or ``--users`` of them), in this process, one torch
thread: the full path's top 10 (the whole catalogue scored) against the two-stage path's
(``--candidates`` items from :class:`serving.retrieval.CandidateGenerator`, then ranked).
``recall_at_10`` = share of the full top 10 that two-stage serving returns, which is the
candidate stage's recall because stage two ranks with the same scores. Times are the
median CPU time of one ``recommend`` call (no HTTP).

    python benchmarks/retrieval.py --json benchmarks/results/retrieval.json --bundle bundles/<run_id>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import top_k_recall, write_json  # noqa: E402

from serving.loader import load_model  # noqa: E402
from serving.recommender import recommend  # noqa: E402

K = 10


def timed_top_k(model, users: list[str]) -> tuple[dict[str, set[str]], float]:  # noqa: ANN001
    """Each user's top K ids, and the median CPU milliseconds per request."""
    found, times = {}, []
    for user in users:
        start = time.process_time()
        found[user] = {item["item_id"] for item in recommend(model, user, K).items}
        times.append(time.process_time() - start)
    return found, round(1000 * statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--bundle", required=True, help="bundle directory or models:/ URI")
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--users", type=int, help="the first N known users (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    full = load_model(args.bundle)
    users = list(full.user_rows)[: args.users]
    reference, full_ms = timed_top_k(full, users)
    runs = []
    for size in args.candidates:
        two_stage = load_model(args.bundle, candidates=size)
        got, ms = timed_top_k(two_stage, users)
        runs.append({"candidates": size, "recall_at_10": top_k_recall(reference, got), "cpu_ms_per_request": ms})
        print(runs[-1], flush=True)
    results = {"bundle": args.bundle, "n_items": full.info.num_items, "users": len(users), "full_cpu_ms_per_request": full_ms,
               "two_stage": runs}  # fmt: skip
    write_json(args.json, results, sys.argv)


if __name__ == "__main__":
    main()
