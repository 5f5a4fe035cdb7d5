"""Helpers shared by the suites that run ``wdrec-serve`` for real or copy bundles around
(``tests/serving``, ``tests/reliability``); importable as ``servers`` (tests/ is on the path)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from wdrec.export.bundle import WEIGHTS


def wdrec_serve() -> list[str]:
    """The ``wdrec-serve`` command of the interpreter running the tests."""
    script = shutil.which("wdrec-serve", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "serving.cli"]


def free_port() -> int:
    """A loopback port nothing listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_env(tracking_uri: str, **settings: str) -> dict[str, str]:
    """The environment without any ``WDREC_*`` of the caller, an admin token, the precomputed
    scorer required, and ``settings`` as ``WDREC_<NAME>`` (e.g. ``max_body_bytes="16384"``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WDREC_")}
    env |= {"MLFLOW_TRACKING_URI": tracking_uri, "WDREC_ADMIN_TOKEN": "cli-token", "WDREC_FAST_PATH": "require"}
    return env | {f"WDREC_{name.upper()}": value for name, value in settings.items()}


def copy_bundle(source: Path, target: Path, version: str | None = None) -> Path:
    """A copy of a bundle; ``version`` rewrites the registered version in its metadata
    (metadata.json is not among the checksummed files, so the copy still reads)."""
    shutil.copytree(source, target)
    if version is not None:
        path = target / "metadata.json"
        metadata = json.loads(path.read_text())
        metadata["version"] = version
        path.write_text(json.dumps(metadata))
    return target


def corrupt_bundle(bundle: Path) -> Path:
    """Flip bytes inside the weights: the checksum no longer matches."""
    with open(bundle / WEIGHTS, "r+b") as handle:
        handle.seek(200)
        data = handle.read(8)
        handle.seek(200)
        handle.write(bytes(b ^ 0xFF for b in data))
    return bundle


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines (an access line carries request_id, path, status, model_version, and pid: the worker)."""
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]


@contextlib.contextmanager
def running_server(args: list[str], env: dict[str, str], workdir: Path, ready_within: float = 120.0) -> Iterator[Server]:
    """``wdrec-serve <args> --port <free port>`` in ``workdir``, ready (``/readyz`` 200) before it
    is yielded, terminated (then killed) afterwards. Its output goes to ``workdir/server.log``."""
    port = free_port()
    log = workdir / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([*wdrec_serve(), *args, "--port", str(port)], env=env, cwd=workdir, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    server = Server(process, f"http://127.0.0.1:{port}", port, log)
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"wdrec-serve exited with {process.returncode}:\n{server.output()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"wdrec-serve not ready in {ready_within:.0f} s:\n{server.output()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
