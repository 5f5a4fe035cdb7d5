"""What every benchmark script shares: the machine description, the JSON output, top-K recall."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        model = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        info["cpu"] = model.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_commit() -> str | None:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return result.stdout.strip() or None


def write_json(path: str | Path, results: dict[str, Any], argv: list[str]) -> None:
    """Write the results with the command, machine, commit and date that produced them."""
    payload = {
        **results,
        "command": " ".join(["python", *argv]),
        "machine": machine(),
        "commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def top_k_recall(full: Mapping[str, Collection[str]], two_stage: Mapping[str, Collection[str]]) -> float:
    """Share of the full ranking's top K that two-stage serving returns, over ``full``'s users:
    the candidate stage's recall, since stage two ranks with the same scores."""
    hits = sum(len(set(items) & set(two_stage[user])) for user, items in full.items())
    return round(hits / sum(len(items) for items in full.values()), 4)
