"""The production set-up, run for real: PostgreSQL behind an ``mlflow server`` on loopback,
``wdrec fit`` tracking into it through ``MLFLOW_TRACKING_URI``, ``wdrec-serve`` serving
``models:/wdrec@champion`` out of it.

Every piece is a real process: a fresh PostgreSQL cluster (``initdb`` in a temporary folder,
password authentication over TCP on a free loopback port), ``mlflow server`` backed by it
with proxied artifacts (``--serve-artifacts`` into a temporary folder), the ``wdrec`` and
``wdrec-serve`` console scripts. Nothing listens beyond 127.0.0.1; each process runs in a
process group of its own, stopped in a ``finally``.

PostgreSQL refuses to run as root. As root, its programs run as the ``postgres`` system user
(created by Debian's package) through ``runuser``; the cluster lives in a folder that user owns,
under the system temporary folder (pytest's own base folder is private to root, mode 0700).

``.ci/run`` installs PostgreSQL when it is missing. Without it the test skips, saying why,
except in CI (``$CI`` set), where a missing or broken PostgreSQL fails the test instead.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from paths import DEFAULT_CONFIG
from servers import free_port, running_server, serve_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # a backstop: fixtures still clean up

PG_USER, PG_PASSWORD, PG_DATABASE = "postgres", "wdrec-test-secret", "mlflow"
# A real fit, cut to seconds (as tests/conftest.py's SHORT_FIT, ranking a sample of users).
FIT_ARGS = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=20", "--data.ranking_max_users=100",
            "--trainer.enable_progress_bar=false"]  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n"


def _unavailable(reason: str) -> NoReturn:
    """Skip (PostgreSQL cannot run on this machine), or fail in CI, where ``.ci/run`` installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is needed in CI (.ci/run installs it), but {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def _postgres_bin_dir() -> Path | None:
    """The folder holding ``initdb``, ``postgres`` and ``pg_ctl``: found on PATH, else in Debian's
    versioned ``/usr/lib/postgresql/<major>/bin`` (the newest), which Debian keeps off PATH."""
    candidates = []
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)], reverse=True)
    return next((c for c in candidates if all((c / name).is_file() for name in ("initdb", "postgres", "pg_ctl"))), None)


def _as_postgres_user() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that runs PostgreSQL's programs as an unprivileged user, and that user
    (None when the tests already run unprivileged)."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam(PG_USER)
    except KeyError:
        _unavailable(f"running as root and there is no '{PG_USER}' system user to run PostgreSQL as")
    runuser = shutil.which("runuser")
    if runuser is None:
        _unavailable("running as root and there is no runuser(1) to run PostgreSQL unprivileged")
    return [runuser, "-u", PG_USER, "--"], user


def _stop_group(process: subprocess.Popen, first: signal.Signals = signal.SIGTERM, grace: float = 30) -> None:
    """Stop a process started with ``start_new_session=True`` and everything in its group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):  # leftovers (workers, children) of an exited leader
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)


def _run(command: list[str], log: Path, timeout: float, **popen: object) -> int:
    """Run ``command`` to its end in a process group of its own, output to ``log``; on timeout the
    whole group is stopped and ``TimeoutError`` raised. Returns the exit status."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{Path(command[0]).name} did not finish in {timeout:.0f} s:\n{_tail(log)}") from None
    finally:
        _stop_group(process, signal.SIGTERM, grace=10)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _wait_until(ready, process: subprocess.Popen, log: Path, what: str, within: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + within
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready in {within:.0f} s:\n{_tail(log)}")
        time.sleep(0.3)


def _venv_script(name: str) -> str:
    """A console script of the interpreter running the tests."""
    script = shutil.which(name, path=str(Path(sys.executable).parent))
    assert script, f"{name} is not installed beside {sys.executable}"
    return script


@dataclass
class Postgres:
    port: int
    log: Path

    def url(self, database: str = PG_DATABASE) -> str:
        """The SQLAlchemy URI, naming the driver: ``postgresql://`` means psycopg (3) in SQLAlchemy >= 2.1
        but psycopg2 before it."""
        return f"postgresql+psycopg://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = PG_DATABASE, autocommit: bool = False):  # noqa: ANN201
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, password=PG_PASSWORD,
                               dbname=database, connect_timeout=5, autocommit=autocommit)  # fmt: skip

    def query(self, sql: str, *params: object) -> list[tuple]:
        with self.connect() as connection:
            return connection.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on a free loopback port, with an empty database ``mlflow``."""
    try:  # the driver of mlflow server's URI (Postgres.url) and of the checks here
        import psycopg
    except ImportError:
        _unavailable("the psycopg driver is not installed (pip install -e '.[dev]')")
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        _unavailable("no initdb/postgres/pg_ctl on PATH or in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    prefix, user = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="wdrec-pg-"))
    process = None
    try:
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        data, log, password_file = root / "data", root / "postgres.log", root / "password"
        password_file.write_text(PG_PASSWORD + "\n")
        if user is not None:
            os.chown(password_file, user.pw_uid, user.pw_gid)
        initdb = [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={password_file}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"]  # fmt: skip
        try:
            status = _run(initdb, root / "initdb.log", timeout=120, cwd=root)
        except TimeoutError as error:
            _unavailable(str(error))
        password_file.unlink()
        if status != 0:
            _unavailable(f"initdb failed ({status}): {_tail(root / 'initdb.log', 2000)}")
        port = free_port()
        # TCP on loopback only; the unix socket in our folder, not /var/run/postgresql. fsync off: a test cluster.
        command = [*prefix, str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                   "-k", str(root), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]  # fmt: skip
        with log.open("w") as out:
            process = subprocess.Popen(command, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        server = Postgres(port, log)

        def accepts() -> bool:
            try:
                server.connect("postgres").close()
            except psycopg.OperationalError:
                return False
            return True

        try:
            _wait_until(accepts, process, log, "postgres", within=60)
        except (RuntimeError, TimeoutError) as error:
            _unavailable(f"the server did not start: {error}")
        with server.connect("postgres", autocommit=True) as connection:  # CREATE DATABASE: not in a transaction
            connection.execute(f"CREATE DATABASE {PG_DATABASE}")
        yield server
    finally:
        if process is not None:
            if process.poll() is None:  # a fast shutdown through pg_ctl, then signals for whatever is left
                with contextlib.suppress(TimeoutError, OSError):
                    _run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "-t", "30",
                          "stop"], root / "pg_ctl-stop.log", timeout=60, cwd=root)  # fmt: skip
            _stop_group(process, signal.SIGINT)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class TrackingServer:
    url: str
    artifacts: Path
    log: Path
    postgres: Postgres


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """``mlflow server`` on a free loopback port: runs and registry in PostgreSQL, artifacts proxied
    by the server into a temporary folder (clients never see that folder)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts, log, port = root / "artifacts", root / "mlflow-server.log", free_port()
    command = [_venv_script("mlflow"), "server", "--backend-store-uri", postgres.url(),
               "--artifacts-destination", str(artifacts), "--serve-artifacts",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # No GenAI job runner: it starts 8 more processes (a huey store in /dev/shm that outlives the server)
    # and takes ~20 s to stop, for jobs (online scoring, trace archival) that wdrec never submits.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_until(healthy, process, log, "mlflow server", within=150)  # creates its schema in PostgreSQL first
        yield TrackingServer(url, artifacts, log, postgres)
    finally:
        _stop_group(process, signal.SIGTERM)


def _fit(tracking_uri: str, workdir: Path, timeout: float = 420) -> str:
    """``wdrec fit`` of the default job, shortened, as a real CLI process; returns its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WDREC_")} | {"MLFLOW_TRACKING_URI": tracking_uri}
    log = workdir / "fit.log"
    command = [_venv_script("wdrec"), "fit", "--config", str(DEFAULT_CONFIG), *FIT_ARGS]
    status = _run(command, log, timeout, cwd=workdir, env=env)
    assert status == 0, f"wdrec fit exited with {status}:\n{_tail(log)}"
    return log.read_text(errors="replace")


def test_fit_tracks_registers_and_serves_through_mlflow_server_on_postgres(mlflow_server: TrackingServer, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    url, postgres = mlflow_server.url, mlflow_server.postgres
    workdir = tmp_path / "fit"
    workdir.mkdir()
    started = time.monotonic()
    _fit(url, workdir)
    fit_seconds = time.monotonic() - started

    # The run, its metrics and the registry, as the server reports them.
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiment = client.get_experiment_by_name("wdrec")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert {"train_loss", "val_loss", "val_auc", "val_hr_10", "val_ndcg_10"} <= set(run.data.metrics)
    assert run.data.tags["registered_model_version"] == "wdrec/1"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri  # proxied by the server
    assert [str(v.version) for v in client.search_model_versions("name = 'wdrec'")] == ["1"]
    champion = client.get_model_version_by_alias("wdrec", "champion")
    assert (str(champion.version), champion.run_id) == ("1", run_id)

    # Artifacts: through the server's artifact proxy, and stored where the server keeps them.
    paths = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"config.yaml", "feature_spec.json", "plots/training_curves.png"} <= paths, paths
    config = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path))).read_text()
    assert "wdrec.data.sources.movielens.MovieLens" in config and "limit_train_batches: 20" in config
    proxied = f"{url}/api/2.0/mlflow-artifacts/artifacts/{experiment.experiment_id}/{run_id}/artifacts/plots/training_curves.png"
    plot = httpx.get(proxied, timeout=30)
    assert plot.status_code == 200 and plot.content.startswith(PNG)
    stored = mlflow_server.artifacts / experiment.experiment_id / run_id / "artifacts"
    assert (stored / "config.yaml").read_text() == config
    assert not any((workdir / name).exists() for name in ("mlflow.db", "mlruns", "mlartifacts")), "tracked locally"

    # The rows live in PostgreSQL, not in a store of the server's own.
    assert postgres.query("SELECT status FROM runs WHERE run_uuid = %s", run_id) == [("FINISHED",)]
    assert postgres.query("SELECT name FROM registered_models") == [("wdrec",)]
    assert postgres.query("SELECT version FROM registered_model_aliases WHERE name = 'wdrec' AND alias = 'champion'") == [(1,)]
    assert postgres.query("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'val_loss'", run_id)[0][0] >= 1

    # Serve the champion straight from the registry behind the server.
    serve_dir = tmp_path / "serve"
    serve_dir.mkdir()
    started = time.monotonic()
    with running_server(["--model", "models:/wdrec@champion"], serve_env(url), serve_dir, ready_within=150) as server:
        ready_seconds = time.monotonic() - started
        with httpx.Client(base_url=server.url, timeout=30) as http:
            model = http.get("/v1/model").json()
            assert (model["name"], model["version"], model["run_id"]) == ("wdrec", "1", run_id)
            response = http.post("/v1/recommend", json={"user_id": "196", "k": 5})
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["user_id"], body["cold_start"], body["model_version"]) == ("196", False, "1")
            scores = [item["score"] for item in body["items"]]
            assert len(scores) == 5 and scores == sorted(scores, reverse=True)
            assert all(isinstance(item["item_id"], str) and 0 <= item["score"] <= 1 for item in body["items"])
            response = http.post("/v1/score", json={"user_id": "196", "item_ids": [body["items"][0]["item_id"], "302"]})
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == "1"
            scored = response.json()["scores"]
            assert len(scored) == 2 and all(0 <= s <= 1 for s in scored)
            assert scored[0] == pytest.approx(scores[0], abs=1e-6)  # the same model answers both routes
    print(f"fit {fit_seconds:.0f} s, wdrec-serve ready in {ready_seconds:.0f} s")
