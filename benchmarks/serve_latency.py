"""Serving latency: a real ``wdrec-serve`` on loopback, driven by a closed-loop load generator.

Everything runs in one scratch directory with its own MLflow store, in this order:

1. ``wdrec fit --config configs/movielens100k.yaml``, cut to 30 batches of one epoch (the
   serving cost does not depend on how well the model learned), registers ``wdrec@champion``.
2. ``wdrec-serve --model models:/wdrec@champion --workers 1`` and, beside it,
   ``mlflow models serve -m models:/wdrec@champion --env-manager local -w 1``: the same
   registered model, each in its own process on a free 127.0.0.1 port.
3. Closed loop at concurrency 1, then 16 (each client sends its next request when the
   previous answer is in): ``POST /v1/recommend {"user_id", "k": 10, "exclude_seen": true}``
   against the full catalogue; MLflow gets ``POST /invocations`` with the same user × every
   catalogue item as ``dataframe_split`` (its pyfunc returns the scores; ranking them would
   be left to the client). The wdrec and MLflow runs of one concurrency follow each other,
   and both servers get the same seeded sequence of known users.
4. Catalogue sweep: for each size (default 10k, 100k, 1M items), an equally short fit on
   ``Synthetic`` data with the features of ``configs/synthetic.yaml``, served from its bundle
   directory, measured at concurrency 1; then the same bundle served again with
   ``--retrieval two_stage`` (300 candidates, then ranked), measured the same way. For
   each path, the top 10 of the first users of the sequence (200, or 20 at 1M items) are
   asked once more; the share of the full path's top 10 that the two-stage path returns
   is the candidate stage's recall (``two_stage.recall_at_10``).

Latency is measured in this process, per request, from writing the request to reading the
last byte of the answer, over one keep-alive connection per client: a minimal HTTP/1.1
client on asyncio streams, because on 2 cores the client shares the CPUs with the server
(measured on the busy machine: 0.35 ms of client CPU per request, httpx.AsyncClient 2.8-3.7
ms). Each scenario first sends ``--warmup`` requests (not measured, every answer checked),
then runs for a fixed time; every answer of the measured part is checked too (status 200;
top-K of length k sorted by score; MLflow: one finite score per catalogue item), and a
failure counts as an error, never as a latency. Beside latency and requests/s, each
scenario reports the server's CPU time per request (its whole process group, from /proc):
on a shared, busy machine that number moves far less than latency does. Every server is
stopped (its whole process group) on the way out, also on an error, Ctrl-C or SIGTERM.

Time: setup dominates. On the busy 2-core machine the full default run took 11 minutes
(685 s, load average 3-6), most of it the 1M-item fit (4 min) and that server's start
(2 min: it loads and verifies the model twice, once to fail fast, once in the app).
``--catalogue 10000 100000`` leaves out the largest size; ``--workdir DIR --reuse-models``
serves the models an earlier run left in DIR again, without training.

Targets (issue): at concurrency 1 p50 <= 5 ms and p99 <= 20 ms on the 2-core machine;
wdrec >= 3x the requests/s of ``mlflow models serve``. ``ratio_vs_mlflow`` compares them at
concurrency 1 (``ratio_vs_mlflow_c16`` at 16).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, top_k_recall, write_json  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
BIN = Path(sys.executable).parent
# A real fit, cut to seconds (as tests/conftest.py SHORT_FIT), and quiet.
SHORT_FIT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=30", "--trainer.enable_progress_bar=false",
             "--trainer.enable_model_summary=false"]  # fmt: skip
K = 10
RECALL_PAIRS = 20_000_000  # user x item scores spent comparing full and two-stage top K per catalogue size
USER_SEQUENCE = 1 << 16  # the seeded sequence of users that every scenario walks through (cycled)


def log(message: str) -> None:
    print(f"[serve_latency {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------- models
def fit(workdir: Path, config: Path, name: str, extra: list[str], reuse: bool = False) -> Path:
    """A short real ``wdrec fit`` in ``workdir`` (registered as ``name``); returns its bundle directory.

    ``reuse``: a bundle a previous run left in ``workdir`` is served again, without training.
    """
    from wdrec.job import run

    existing = sorted((workdir / "bundles").glob("*/items.parquet"))
    if reuse and existing:
        log(f"reusing {existing[-1].parent}")
        return existing[-1].parent
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(workdir):
        cli = run(["fit", "--config", str(config), *SHORT_FIT, f"--registry.name={name}", *extra])
        run_id = cli.trainer.logger.run_id
    del cli
    gc.collect()
    bundle = workdir / "bundles" / run_id
    if not (bundle / "items.parquet").is_file():
        raise RuntimeError(f"wdrec fit wrote no bundle at {bundle}")
    return bundle


def synthetic_fit(workdir: Path, n_items: int, reuse: bool = False) -> Path:
    """A model over ``n_items`` synthetic items (features of configs/synthetic.yaml), as short as the ML-100k one.

    2,000 users and max(50k, 2 n_items) interactions keep data generation and setup quick; the
    item table (the served catalogue) holds every item. Evaluation ranks a handful of users
    against the whole catalogue, about 200k scored pairs in one batch.
    """
    per_batch = max(1, min(50, 200_000 // n_items))
    return fit(
        workdir,
        CONFIGS / "synthetic.yaml",
        f"wdrec-catalogue-{n_items}",
        [f"--data.source.init_args.n_items={n_items}", "--data.source.init_args.n_users=2000",
         f"--data.source.init_args.n_interactions={max(50_000, 2 * n_items)}",
         f"--data.ranking_users={per_batch}", "--data.ranking_max_users=50",
         "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0"],
        reuse,
    )  # fmt: skip


def model_arguments(parser: argparse.ArgumentParser, workdir_help: str, reuse_help: str) -> None:
    """``--workdir`` and ``--reuse-models``: where the fits go, and whether an earlier run's are used again."""
    parser.add_argument("--workdir", type=Path, help=f"{workdir_help} (default: a temporary directory)")
    parser.add_argument("--reuse-models", action="store_true", help=f"with --workdir: {reuse_help}")


def model_workdir(parser: argparse.ArgumentParser, args: argparse.Namespace, stack: contextlib.ExitStack, prefix: str) -> Path:
    """``--workdir`` (made if missing), else a temporary directory removed when ``stack`` closes."""
    if args.reuse_models and not args.workdir:
        parser.error("--reuse-models needs --workdir")
    if args.workdir is None:
        return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def bundle_ids(bundle: Path) -> tuple[list[str], list[str]]:
    """Known user ids and the catalogue's item ids (in catalogue order), read from the bundle's tables."""
    users = pq.read_table(bundle / "users.parquet", columns=["user_id"]).column(0).cast("string").to_pylist()
    items = pq.read_table(bundle / "items.parquet", columns=["item_id"]).column(0).cast("string").to_pylist()
    return users, items


# ---------------------------------------------------------------------------- servers
@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    log: Path
    startup_s: float = 0.0

    def peak_rss_mb(self) -> float | None:
        """Peak resident memory of the server process itself (VmHWM), when it still runs."""
        with contextlib.suppress(OSError, StopIteration, ValueError):
            status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
            return round(int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024, 1)
        return None

    def cpu_seconds(self) -> float:
        """User + system CPU time of every live process in the server's process group."""
        total, tick = 0.0, os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rpartition(")")[2].split()  # after "pid (comm)": state, ppid, pgrp, ...
                if int(fields[2]) == self.process.pid:
                    total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(tracking_uri: str) -> dict[str, str]:
    """This environment without the caller's ``WDREC_*`` settings, with the run's MLflow store and
    the precomputed scorer required (``WDREC_FAST_PATH=require``: a model it cannot score exactly
    fails to start instead of being measured on the slow path).

    This interpreter's bin/ goes first on PATH: ``mlflow models serve --env-manager local``
    starts its server as ``bash -c "exec uvicorn ..."``, found on PATH, so a virtualenv that
    is not activated otherwise fails with "uvicorn: not found" (exit 127).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("WDREC_")}
    path = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return env | {"MLFLOW_TRACKING_URI": tracking_uri, "PYTHONUNBUFFERED": "1", "PATH": path, "WDREC_FAST_PATH": "require"}


def _die_with_parent() -> None:
    """In the server's child process, before exec: SIGTERM it when this process dies, even by SIGKILL
    (Linux; elsewhere a no-op). A grandchild (mlflow's uvicorn) is covered by the group kill in stop()."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (uvicorn and any child), SIGKILL after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no child of its group survives it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return


@contextlib.contextmanager
def serving(name: str, command: list[str], env: dict[str, str], cwd: Path, ready_path: str,
            ready_within: float) -> Iterator[Server]:  # fmt: skip
    """``command`` plus ``--port <free port>`` in its own process group, yielded once ``ready_path``
    answers 200; stopped (group-wide) on the way out. Output goes to ``cwd/<name>.log``."""
    port = free_port()
    log_path = cwd / f"{name}.log"
    start = time.perf_counter()
    with log_path.open("wb") as out:
        process = subprocess.Popen([*command, "--port", str(port)], env=env, cwd=cwd, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
    server = Server(name, process, port, log_path)
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}:\n{server.tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=5) as answer,
            ):
                if answer.status == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready in {ready_within:.0f} s:\n{server.tail()}")
            time.sleep(0.25)
        server.startup_s = round(time.perf_counter() - start, 1)
        log(f"{name} ready on 127.0.0.1:{port} after {server.startup_s} s")
        yield server
    finally:
        stop(process)


def model_info(server: Server) -> dict:
    """What ``GET /v1/model`` says about the served model, reduced to what bears on its cost."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/model", timeout=30) as answer:
        info = json.loads(answer.read())
    keys = ("name", "version", "num_users", "num_items", "fast_path", "retrieval", "request_ms")
    return {key: info.get(key) for key in keys} | {"features": [f["name"] for f in info.get("features", [])]}


def wdrec_serve(model: str, retrieval: str = "full") -> list[str]:
    script = BIN / "wdrec-serve"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "serving.cli"]
    return [*command, "--model", model, "--host", "127.0.0.1", "--workers", "1", "--retrieval", retrieval]


def mlflow_serve(model: str) -> list[str]:
    script = BIN / "mlflow"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mlflow"]
    return [*command, "models", "serve", "-m", model, "--env-manager", "local", "-h", "127.0.0.1", "-w", "1"]


# ------------------------------------------------------------------------ load generator
class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: write a request, read one answer
    (Content-Length or chunked). Small on purpose, so that the client's own cost per request
    stays in microseconds."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
            self.writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = self.reader
        self.writer.write(head + body)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(None, 2)[1])
        length, chunked, close = None, False, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            parts = []
            while size := int((await reader.readline()).split(b";", 1)[0], 16):
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            body = b"".join(parts)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body, close = await reader.read(), True
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


Check = Callable[[bytes], str | None]  # an answer's body -> None when right, else what is wrong


@dataclass
class Load:
    """What one scenario measured."""

    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(message[:300])

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([math.nan])
        p50, p90, p99 = (round(float(v), 3) for v in np.percentile(lat, [50, 90, 99]))
        return {
            "p50_ms": p50, "p99_ms": p99, "rps": round(len(self.latencies_ms) / self.seconds, 1) if self.seconds else 0.0,
            "p90_ms": p90, "mean_ms": round(float(lat.mean()), 3), "max_ms": round(float(lat.max()), 3),
            "requests": len(self.latencies_ms), "errors": self.errors, "error_samples": self.error_samples,
            "concurrency": self.concurrency, "seconds": round(self.seconds, 2),
            # CPU time per answered request (user + system), far less sensitive to a busy machine than latency.
            "server_cpu_ms_per_request": round(self.server_cpu_s * 1000 / n, 3) if (n := len(self.latencies_ms)) else None,
            "client_cpu_ms_per_request": round(self.client_cpu_s * 1000 / n, 3) if n else None,
        }  # fmt: skip


async def _drive(port: int, path: str, bodies: Callable[[int], bytes], check: Check, concurrency: int,
                 seconds: float, warmup: int, timeout: float, server_cpu: Callable[[], float]) -> Load:  # fmt: skip
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: "
    prefix = head.encode()
    load = Load(concurrency)
    counter = 0  # index into the users' sequence, shared by the clients (one event loop: no lock)
    connections = [Connection(port) for _ in range(concurrency)]

    async def one(connection: Connection) -> tuple[float, str | None]:
        nonlocal counter
        body = bodies(counter)
        counter += 1
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                status, answer = await connection.post(prefix + b"%d\r\n\r\n" % len(body), body)
        except (OSError, EOFError, ValueError, IndexError, asyncio.IncompleteReadError, TimeoutError) as error:
            connection.close()  # reconnect on the next request
            return time.perf_counter() - start, f"{type(error).__name__}: {error}"
        elapsed = time.perf_counter() - start
        if status != 200:
            return elapsed, f"HTTP {status}: {answer[:200]!r}"
        try:
            return elapsed, check(answer)
        except (ValueError, KeyError, TypeError) as error:  # not the JSON it should be
            return elapsed, f"bad answer: {type(error).__name__}: {error}"

    # Warm-up: not measured; every answer must be right, else the scenario stops here.
    warm_left, warm_deadline = warmup, time.perf_counter() + max(2.0, seconds / 4)

    async def warm(connection: Connection) -> None:
        nonlocal warm_left
        while warm_left > 0 and (warm_left == warmup or time.perf_counter() < warm_deadline):
            warm_left -= 1
            _, problem = await one(connection)
            if problem:
                raise RuntimeError(f"{path}: a warm-up request failed: {problem}")

    await asyncio.gather(*(warm(c) for c in connections))

    cpu_before, client_before = server_cpu(), time.process_time()
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()

    async def measure(connection: Connection) -> None:
        while time.perf_counter() < deadline:
            elapsed, problem = await one(connection)
            if problem is None:
                load.latencies_ms.append(elapsed * 1000)
            else:
                load.error(problem)

    await asyncio.gather(*(measure(c) for c in connections))
    load.seconds = time.perf_counter() - start  # to the last answer, in-flight requests included
    load.server_cpu_s, load.client_cpu_s = server_cpu() - cpu_before, time.process_time() - client_before
    for connection in connections:
        connection.close()
    return load


def drive(server: Server, path: str, bodies: Callable[[int], bytes], check: Check, concurrency: int,
          seconds: float, warmup: int, timeout: float) -> dict:  # fmt: skip
    load = asyncio.run(_drive(server.port, path, bodies, check, concurrency, seconds, warmup, timeout, server.cpu_seconds))
    result = load.summary()
    log(f"{server.name} c{concurrency}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
        f"{result['rps']} req/s, {result['requests']} requests, {result['errors']} errors, "
        f"server CPU {result['server_cpu_ms_per_request']} ms/request")  # fmt: skip
    return result


def recommend_bodies(sequence: list[str]) -> Callable[[int], bytes]:
    encoded = {u: json.dumps({"user_id": u, "k": K, "exclude_seen": True}).encode() for u in set(sequence)}
    return lambda i: encoded[sequence[i % len(sequence)]]


def check_recommendation(body: bytes) -> str | None:
    answer = json.loads(body)
    scores = [item["score"] for item in answer.get("items", [])]
    if len(scores) != K:
        return f"expected {K} items, got {len(scores)}"
    if any(a < b for a, b in zip(scores, scores[1:], strict=False)):
        return "items not sorted by score"
    return None


def invocation_bodies(sequence: list[str], items: list[str]) -> Callable[[int], bytes]:
    """The user × the whole catalogue, as MLflow's ``dataframe_split`` input (built once per user)."""
    encoded = {}
    for user in set(sequence):
        rows = [[user, item] for item in items]
        encoded[user] = json.dumps({"dataframe_split": {"columns": ["user_id", "item_id"], "data": rows}}).encode()
    return lambda i: encoded[sequence[i % len(sequence)]]


def check_invocation(n_items: int) -> Check:
    def check(body: bytes) -> str | None:
        predictions = json.loads(body).get("predictions")
        if not isinstance(predictions, list) or len(predictions) != n_items:
            return f"expected {n_items} predictions, got {type(predictions).__name__} of {len(predictions or [])}"
        # The pyfunc returns a Series named "score": MLflow answers [{"score": p}, ...].
        values = [next(iter(p.values())) if isinstance(p, dict) and len(p) == 1 else p for p in predictions]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return f"expected finite scores, got e.g. {predictions[0]!r}"
        return None

    return check


def top_k_lists(server: Server, users: list[str], timeout: float) -> dict[str, list[str]]:
    """Each user's recommended item ids, asked one by one, after the measured part."""
    found = {}
    for user in dict.fromkeys(users):
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/recommend", method="POST",
                                         data=recommend_bodies([user])(0), headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            found[user] = [item["item_id"] for item in json.loads(answer.read())["items"]]
    return found


def user_sequence(users: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(users) for _ in range(USER_SEQUENCE)]


# --------------------------------------------------------------------------- analysis
def growth(catalogue: dict[str, dict]) -> dict:
    """How a request's cost grows with the catalogue, for p50 latency and for server CPU time.

    ``per_item_us``: the marginal cost of one more item, between the two largest sizes;
    ``per_item_us_at``: each size's cost divided by its items; ``loglog_slope`` between
    consecutive sizes: 1 is linear growth, below 1 a fixed per-request cost still shows.
    """
    sizes = sorted(int(n) for n in catalogue)
    result: dict = {}
    for metric, key in (("p50_ms", "p50"), ("server_cpu_ms_per_request", "server_cpu")):
        cost = [catalogue[str(n)][metric] for n in sizes]
        if len(sizes) < 2 or any(c is None or not c > 0 for c in cost):
            continue
        pairs = list(zip(sizes, cost, strict=True))
        result[key] = {
            "per_item_us": round((cost[-1] - cost[-2]) / (sizes[-1] - sizes[-2]) * 1000, 4),
            "per_item_us_at": {str(n): round(c / n * 1000, 4) for n, c in pairs},
            "loglog_slope": {f"{a}->{b}": round(math.log(tb / ta) / math.log(b / a), 3)
                             for (a, ta), (b, tb) in zip(pairs, pairs[1:], strict=False)},
        }  # fmt: skip
    return result


def versions() -> dict[str, str]:
    found = {}
    for package in ("wdrec", "torch", "mlflow", "fastapi", "uvicorn", "starlette", "pydantic"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


# ------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per ML-100k scenario (each server, each concurrency)")
    parser.add_argument("--catalogue-seconds", type=float, default=10.0, help="measured time per catalogue size")
    parser.add_argument("--catalogue", type=int, nargs="*", default=[10_000, 100_000, 1_000_000],
                        help="synthetic catalogue sizes (none: skip the sweep)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--no-mlflow", action="store_true", help="skip `mlflow models serve`")
    parser.add_argument("--no-two-stage", dest="two_stage", action="store_false",
                        help="catalogue sweep: skip the second server with --retrieval two_stage")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests before each scenario")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sequence of users")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="one request's limit; past it, an error")
    parser.add_argument("--ready-timeout", type=float, default=900.0, help="a server's limit to load and answer")
    model_arguments(parser, "keep models, stores and server logs here", "serve the models a previous run trained there")
    args = parser.parse_args()
    if 1 not in args.concurrency:
        parser.error("--concurrency must include 1 (the c1 results and ratio_vs_mlflow)")

    # SIGTERM (a timeout, a killed job) unwinds like Ctrl-C, so every server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.perf_counter()
    with contextlib.ExitStack() as stack:
        workdir = model_workdir(parser, args, stack, "serve_latency-")
        tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # wdrec fit in this process, and the servers
        env = server_env(tracking_uri)
        results = run(args, workdir, env)
    results["versions"] = versions()
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    log(f"done in {results['total_seconds']} s")
    write_json(args.json, results, sys.argv)


def run(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict:
    results: dict = {"k": K, "exclude_seen": True, "workers": 1, "setup_seconds": {}}
    timeout, warmup = args.request_timeout, args.warmup

    log("ML-100k model: short fit ...")
    start = time.perf_counter()
    bundle = fit(workdir / "ml100k", CONFIGS / "movielens100k.yaml", "wdrec", [], args.reuse_models)
    results["setup_seconds"]["fit_ml100k"] = round(time.perf_counter() - start, 1)
    users, items = bundle_ids(bundle)
    sequence = user_sequence(users, args.seed)
    results["n_items"], results["n_users"] = len(items), len(users)
    log(f"model: {len(users)} users, {len(items)} items; bundle {bundle}")

    model = "models:/wdrec@champion"
    with contextlib.ExitStack() as servers:
        wdrec = servers.enter_context(serving("wdrec-serve", wdrec_serve(model), env, workdir, "/readyz", args.ready_timeout))
        mlflow = None
        if not args.no_mlflow:
            mlflow = servers.enter_context(serving("mlflow-serve", mlflow_serve(model), env, workdir, "/ping", args.ready_timeout))
            mlflow_bodies = invocation_bodies(sequence, items)
        results["startup_s"] = {"wdrec": wdrec.startup_s, **({"mlflow": mlflow.startup_s} if mlflow else {})}
        results["model"] = model_info(wdrec)
        if not results["model"]["fast_path"]:
            log("note: wdrec-serve scores this model with Scorer.score_user (fast_path false: see its log)")
        ours = recommend_bodies(sequence)
        for concurrency in args.concurrency:
            key = f"c{concurrency}"
            results[key] = drive(wdrec, "/v1/recommend", ours, check_recommendation, concurrency, args.seconds, warmup, timeout)
            if mlflow is not None:
                theirs = drive(mlflow, "/invocations", mlflow_bodies, check_invocation(len(items)), concurrency,
                               args.seconds, warmup, timeout)  # fmt: skip
                results.setdefault("mlflow", {})[key] = theirs
        results["wdrec_server_peak_rss_mb"] = wdrec.peak_rss_mb()

    if "mlflow" in results:
        mlflow_c1 = results["mlflow"]["c1"]["rps"]
        results["mlflow_serve_rps"] = mlflow_c1
        results["ratio_vs_mlflow"] = round(results["c1"]["rps"] / mlflow_c1, 2) if mlflow_c1 else None
        results["ratio_concurrency"] = 1
        for concurrency in args.concurrency:
            key = f"c{concurrency}"
            if concurrency != 1 and results["mlflow"][key]["rps"]:
                results[f"mlflow_serve_rps_{key}"] = results["mlflow"][key]["rps"]
                results[f"ratio_vs_mlflow_{key}"] = round(results[key]["rps"] / results["mlflow"][key]["rps"], 2)
    else:
        results["mlflow_serve_rps"] = results["ratio_vs_mlflow"] = None

    results["catalogue"] = {}
    for n_items in args.catalogue:
        log(f"catalogue of {n_items:,} items: short fit on synthetic data ...")
        start = time.perf_counter()
        directory = workdir / f"catalogue-{n_items}"
        bundle = synthetic_fit(directory, n_items, args.reuse_models)
        fit_s = round(time.perf_counter() - start, 1)
        users, items = bundle_ids(bundle)
        sequence = user_sequence(users, args.seed)
        entry: dict = {"n_items": len(items)}
        recall_users = max(20, min(200, RECALL_PAIRS // len(items)))  # 200 users up to 100k items, 20 at 1M
        for retrieval in ("full", "two_stage") if args.two_stage else ("full",):
            command = wdrec_serve(str(bundle), retrieval)
            with serving(f"wdrec-serve-{n_items}-{retrieval}", command, env, directory, "/readyz", args.ready_timeout) as server:
                scenario = drive(server, "/v1/recommend", recommend_bodies(sequence), check_recommendation,
                                 1, args.catalogue_seconds, warmup, timeout)  # fmt: skip
                scenario |= {"startup_s": server.startup_s, "server_peak_rss_mb": server.peak_rss_mb(),
                             **{key: model_info(server)[key] for key in ("fast_path", "retrieval")}}  # fmt: skip
                top = top_k_lists(server, sequence[:recall_users], timeout)
            if retrieval == "full":
                entry |= scenario
                full_top = top
            else:
                entry["two_stage"] = scenario | {"recall_at_10": top_k_recall(full_top, top), "recall_users": len(top)}
        results["catalogue"][str(n_items)] = entry
        results["setup_seconds"][f"fit_catalogue_{n_items}"] = fit_s
        shutil.rmtree(directory / "checkpoints", ignore_errors=True)  # ~1 GB for 1M items, with optimizer state
        if not args.reuse_models:
            shutil.rmtree(directory / "bundles", ignore_errors=True)
        gc.collect()
    if len(results["catalogue"]) >= 2:
        results["catalogue_growth"] = growth(results["catalogue"])
    return results


if __name__ == "__main__":
    main()
