"""Several uvicorn workers serving one model: a published target that every worker follows.

Each worker is a process of its own, so a reload taken by one of them cannot swap the model in
the others' memory. ``wdrec-serve --workers N`` (N > 1) therefore makes a state directory per
server (:func:`create_state`), passes it to the workers as ``WDREC_STATE_DIR`` and removes it
at exit; each worker's app holds a :class:`Cluster` over it::

    target.json         what every worker must serve: generation, uri, pinned uri, version
    publish.lock        flock held while a worker publishes: reloads never interleave across workers
    workers/<pid>.json  each worker's state: the generation and version it serves, its last load error
    workers/<pid>.lock  flock each worker holds for its life: one that can be taken is a dead worker's
    metrics/            PROMETHEUS_MULTIPROC_DIR: request counters summed over the workers

A reload (``POST /admin/reload`` on any worker) loads and probes the model in that worker (a
failure publishes nothing: 409), publishes it as the next generation (written whole, then
renamed), and answers once every live worker reports that generation, or after
``reload_timeout`` naming the workers that lag. Each worker reads target.json every
``sync_seconds`` and loads a newer generation in a thread; a worker that fails to load it keeps
its model and retries, backing off. A worker started later (uvicorn replacing one that died)
loads the published target, not the start URI. An alias (``models:/name@alias``) is published
pinned to the version the publisher loaded, so that no worker resolves it to another version.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from serving.loader import ModelLoadError
from serving.model_store import ModelStore, is_alias
from serving.served_model import ServedModel

log = logging.getLogger("wdrec.serving")
TARGET = "target.json"
PUBLISH_LOCK = "publish.lock"
WORKERS = "workers"
METRICS = "metrics"
WAIT_STEP = 0.05  # seconds between looks at the workers' states while a reload waits for them
MAX_RETRY_SECONDS = 60.0  # a worker retries a target it failed to load, doubling the wait up to this


@dataclass(frozen=True)
class Target:
    """The model every worker must serve."""

    generation: int  # one more per publication
    uri: str  # as asked for; what /v1/model reports as the source
    pinned: str  # what the workers load: an alias resolved to the version the publisher loaded
    version: str | None


@dataclass(frozen=True)
class WorkerState:
    """What one serving process holds: written to ``workers/<pid>.json``, reported by /metrics."""

    pid: int
    generation: int  # the published target it serves; -1 before its first load (and in a single process)
    version: str | None = None
    name: str | None = None  # None: no model loaded
    run_id: str | None = None
    task: str | None = None
    num_items: int = 0
    reloads: int = 0
    failures: int = 0
    error: str | None = None  # why its last load failed (the previous model stays), else None

    @classmethod
    def of(cls, store: ModelStore, generation: int = -1) -> WorkerState:
        info = None if store.current is None else store.current.info
        model: dict[str, Any] = {} if info is None else {
            "version": info.version, "name": info.name, "run_id": info.run_id, "task": info.task, "num_items": info.num_items
        }  # fmt: skip
        return cls(os.getpid(), generation, reloads=store.reloads, failures=store.failures, error=store.last_error, **model)


@dataclass(frozen=True)
class Reload:
    """The outcome of a published reload: ``lagging`` are the live workers not yet on ``target``."""

    old: ServedModel | None
    new: ServedModel
    target: Target
    workers: list[WorkerState]
    lagging: list[WorkerState]


def pin(uri: str, version: str | None) -> str:
    """``models:/name@alias`` → ``models:/name/<version>``; any other URI as it is."""
    if version is None or not is_alias(uri):
        return uri
    return f"models:/{uri.removeprefix('models:/').partition('@')[0]}/{version}"


def create_state(uri: str, version: str | None) -> Path:
    """A fresh state directory whose target (generation 0) is the model ``wdrec-serve`` checked at start."""
    directory = Path(tempfile.mkdtemp(prefix="wdrec-serve-"))
    (directory / WORKERS).mkdir()
    (directory / METRICS).mkdir()
    _write_json(directory / TARGET, asdict(Target(0, uri, pin(uri, version), version)))
    return directory


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write beside, then rename over: a reader sees the old file or the new one, never part of one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        json.dump(data, out)
    os.replace(temporary, path)


class Cluster:
    """This worker's side of the state directory (see the module docstring).

    Args:
        directory: the server's state directory (``WDREC_STATE_DIR``).
        store: this worker's model store.
        sync_seconds: how often the worker reads the published target.
        reload_timeout: how long a reload waits for every worker to serve it.
    """

    def __init__(self, directory: Path, store: ModelStore, sync_seconds: float, reload_timeout: float) -> None:
        self.directory, self.store = directory, store
        self.sync_seconds, self.reload_timeout = sync_seconds, reload_timeout
        self.pid = os.getpid()
        self.generation = -1  # the published target this worker serves
        self._lock = threading.Lock()  # one load at a time here, and never an older generation after a newer one
        self._life: int | None = None  # workers/<pid>.lock, flocked while this worker lives

    def target(self) -> Target:
        return Target(**json.loads((self.directory / TARGET).read_text()))

    def start(self) -> None:
        """Register, then load the published target (again if it moves meanwhile). Blocking.

        Registered first, so that a reload published while this worker loads waits for it too.
        """
        self._life = os.open(self._file(self.pid, ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._life, fcntl.LOCK_EX)
        self._record()
        while (target := self.target()).generation > self.generation:
            self._load(target.pinned, target.generation, source=target.uri)  # ModelLoadError: startup fails

    def stop(self) -> None:
        """Leave: remove this worker's state (its metric files stay, their counts are part of the totals)."""
        self._file(self.pid, ".json").unlink(missing_ok=True)
        if self._life is not None:
            self._file(self.pid, ".lock").unlink(missing_ok=True)
            os.close(self._life)
            self._life = None

    async def watch(self) -> None:
        """Follow target.json: load each newer generation in a thread; retry a failed one, backing off."""
        failed, retry_at, delay = -1, 0.0, self.sync_seconds
        while True:
            await asyncio.sleep(self.sync_seconds)
            try:
                target = self.target()
                if target.generation <= self.generation or (target.generation == failed and time.monotonic() < retry_at):
                    continue
                await run_in_threadpool(self._load, target.pinned, target.generation, target.uri)
                failed, delay = -1, self.sync_seconds
            except ModelLoadError as error:
                failed, retry_at = target.generation, time.monotonic() + delay
                log.error("worker %d: generation %d (%s) failed to load, retrying in %.1f s: %s", self.pid,
                          target.generation, target.uri, delay, error)  # fmt: skip
                delay = min(2 * delay, MAX_RETRY_SECONDS)
            except Exception as error:  # e.g. the directory removed at shutdown: the next look decides
                log.warning("worker %d: cannot follow the published model: %s: %s", self.pid, type(error).__name__, error)

    def reload(self, uri: str) -> Reload:
        """Load and probe ``uri`` here, publish it, wait for every live worker to serve it. Blocking.

        Raises :class:`ModelLoadError` (nothing published) when it fails here. Past
        ``reload_timeout`` the result names the workers that lag; they go on converging.
        """
        with self._publishing():
            old, new, target = self._publish(uri)
            deadline = time.monotonic() + self.reload_timeout
            while True:
                workers = self.workers()
                lagging = [worker for worker in workers if worker.generation < target.generation]
                if not lagging or time.monotonic() >= deadline:
                    return Reload(old, new, target, workers, lagging)
                time.sleep(WAIT_STEP)

    def follow_alias(self, version: str) -> None:
        """The start URI's alias now names ``version``: publish it, unless another worker's poller did. Blocking."""
        with self._publishing():
            target = self.target()
            if (target.uri, target.version) != (self.store.uri, version):
                self._publish(self.store.uri)

    def workers(self) -> list[WorkerState]:
        """The live workers' states, by pid; a dead worker's files are removed."""
        states = []
        for path in (self.directory / WORKERS).glob("*.json"):
            pid = int(path.stem)
            try:
                if self._alive(pid):
                    states.append(WorkerState(**json.loads(path.read_text())))
                else:
                    path.unlink(missing_ok=True)
                    self._file(pid, ".lock").unlink(missing_ok=True)
            except FileNotFoundError:  # it stopped meanwhile
                continue
        return sorted(states, key=lambda state: state.pid)

    def _publish(self, uri: str | None) -> tuple[ServedModel | None, ServedModel, Target]:
        """Load ``uri`` here as the next generation, then publish it. Call with the publish lock held."""
        generation = self.target().generation + 1
        loaded = self._load(uri, generation)
        assert loaded is not None, "a worker never serves a generation beyond the published one"
        old, new = loaded
        target = Target(generation, new.info.source, pin(new.info.source, new.info.version), new.info.version)
        _write_json(self.directory / TARGET, asdict(target))
        log.info("published", extra={"event": "model_published", "generation": generation, "source": target.uri,
                                      "pinned": target.pinned, "model_version": target.version})  # fmt: skip
        return old, new, target

    def _load(self, uri: str | None, generation: int, source: str | None = None) -> tuple[ServedModel | None, ServedModel] | None:
        """Make ``uri`` current as ``generation`` and record the outcome, a failure too (a reload waiting
        on this worker reads it); None when this worker already serves that generation or a newer one."""
        with self._lock:
            if generation <= self.generation:
                return None
            try:
                loaded = self.store.load(uri, source=source)
            except ModelLoadError:
                self._record()
                raise
            self.generation = generation
            self._record()
        return loaded

    def _record(self) -> None:
        _write_json(self._file(self.pid, ".json"), asdict(WorkerState.of(self.store, self.generation)))

    def _file(self, pid: int, suffix: str) -> Path:
        return self.directory / WORKERS / f"{pid}{suffix}"

    def _alive(self, pid: int) -> bool:
        """Whether worker ``pid`` still holds its life lock (the kernel drops it when a process dies)."""
        if pid == self.pid:
            return True
        try:
            handle = os.open(self._file(pid, ".lock"), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(handle)  # releases the lock when it was taken
        return False

    @contextlib.contextmanager
    def _publishing(self) -> Iterator[None]:
        """The publish lock over all the workers (flock: released by the kernel if the holder dies)."""
        with open(self.directory / PUBLISH_LOCK, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
