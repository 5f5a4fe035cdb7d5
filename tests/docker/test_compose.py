"""docker/compose.yaml end to end: real images, a real daemon, real Compose, real HTTP.

Builds every image (from Debian packages through docker/compose.offline.yaml where the official
base images cannot be pulled, as here), brings the stack up, and checks what a user relies on:
PostgreSQL-backed MLflow, the training job registering the champion, `/v1/recommend` through the
published port, every health check healthy, a second `up` that does not retrain, and the API
following a moved champion alias without a restart. Teardown removes everything it made.

Training is cut short through the compose file's own switch (WDREC_FIT_ARGS); the shipped default
trains the full default job.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from paths import REPO_ROOT

from wdrec.data.sources.base import default_data_dir
from wdrec.data.sources.movielens import MovieLens

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]

DOCKER = REPO_ROOT / "docker"
PROJECT = "wdrec-test"
SHORT_FIT = "--trainer.max_epochs 1 --trainer.limit_train_batches 30 --trainer.limit_val_batches 10"
POLL_SECONDS = 5
OFFICIAL_BASES = ("python:3.11.13-slim-bookworm", "postgres:16.6-bookworm")  # compose.yaml's defaults
OFFLINE_BASES = (
    "wdrec-offline/python:bookworm",
    "wdrec-offline/postgres:bookworm",
    "wdrec-offline/wheels:local",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pip_setting(name: str) -> str | None:
    """A setting of this machine's pip (`pip config get global.<name>`), e.g. its CA bundle."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", f"global.{name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    value = result.stdout.strip() if result.returncode == 0 else ""
    return value.split()[0] if value else None


def http_json(url: str, body: dict | None = None, timeout: float = 10) -> dict:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Stack:
    daemon: object  # conftest.Daemon
    files: list[Path]
    env: dict[str, str]
    api: str
    mlflow: str
    offline: bool

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        options = [part for path in self.files for part in ("-f", str(path))]
        result = subprocess.run(
            ["docker", "compose", "-p", PROJECT, *options, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and result.returncode != 0:
            logs = []
            for service in ("train", "api", "mlflow", "postgres"):  # the likeliest culprit first
                tail = subprocess.run(
                    ["docker", "compose", "-p", PROJECT, *options, "logs", "--no-color", "--tail", "30", service],
                    env=self.env, capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                logs.append(f"--- {service} (last 30 lines)\n{tail.stdout[-3000:]}{tail.stderr[-500:]}")
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {result.returncode}\n--- output (tail)\n"
                f"{(result.stdout + result.stderr)[-2500:]}\n" + "\n".join(logs)
            )
        return result

    def container(self, service: str) -> dict:
        ids = self.compose("ps", "--all", "--quiet", service).stdout.split()
        assert len(ids) == 1, f"{service}: expected one container, found {ids}"
        return json.loads(self.daemon.run("inspect", ids[0]).stdout)[0]

    def client(self):  # noqa: ANN201 - mlflow.MlflowClient
        from mlflow import MlflowClient

        return MlflowClient(self.mlflow)


def official_bases_pullable(daemon) -> bool:  # noqa: ANN001
    for image in OFFICIAL_BASES:
        if daemon.run("pull", "--quiet", image, timeout=300, check=False).returncode != 0:
            return False
    return True


@pytest.fixture(scope="module")
def stack(docker_daemon) -> Iterator[Stack]:  # noqa: ANN001
    report = docker_daemon.report
    env = {
        **docker_daemon.env,
        "MLFLOW_PORT": str(free_port()),
        "WDREC_API_PORT": str(free_port()),
        "WDREC_POLL_SECONDS": str(POLL_SECONDS),
        "WDREC_FIT_ARGS": SHORT_FIT,
        "RETRAIN": "",
    }
    files = [DOCKER / "compose.yaml"]
    started = time.monotonic()
    # MovieLens comes from the host's data cache, filled here through the host's own routes: this
    # daemon makes no NAT rules (--iptables=false), so containers cannot download it themselves.
    data_dir = default_data_dir()
    MovieLens("100k").prepare(data_dir)  # a no-op when the cache already holds it
    env["WDREC_DATA_DIR"] = str(data_dir)
    offline = os.environ.get("WDREC_DOCKER_OFFLINE") == "1" or not official_bases_pullable(docker_daemon)
    if offline:
        # As a user without a registry: bases from Debian packages, torch from pip's local wheels,
        # and the CA bundle pip is configured with as a build secret.
        cert = pip_setting("cert") or os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
        wheels = pip_setting("find-links") or os.environ.get("PIP_FIND_LINKS") or "/opt/wheels"
        env.update(PIP_CERT_FILE=cert, WHEELS_DIR=wheels)
        files.append(DOCKER / "compose.offline.yaml")
        t0 = time.monotonic()
        result = subprocess.run(
            [str(DOCKER / "offline-images.sh")], env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f"offline-images.sh failed:\n{(result.stdout + result.stderr)[-4000:]}"
        report.append(f"offline base images (mmdebstrap + import): {time.monotonic() - t0:.0f} s")
    else:
        # The offline override mounts the data cache itself; online, compose.yaml downloads into a
        # volume, which needs a route out that this daemon does not give containers.
        mount = docker_daemon.root / "compose.data.yaml"
        mount.write_text(json.dumps({"services": {"train": {"volumes": [f"{data_dir}:/data:ro"]}}}))
        files.append(mount)
    report.append(f"mode: {'offline (docker/compose.offline.yaml)' if offline else 'official base images'}")
    s = Stack(
        daemon=docker_daemon, files=files, env=env, offline=offline,
        api=f"http://127.0.0.1:{env['WDREC_API_PORT']}", mlflow=f"http://127.0.0.1:{env['MLFLOW_PORT']}",
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        s.compose("build", timeout=1800)
        report.append(f"compose build (all images): {time.monotonic() - t0:.0f} s")
        for image in ("wdrec:0.1.0", "wdrec-mlflow:0.1.0"):
            size = int(docker_daemon.run("image", "inspect", "--format", "{{.Size}}", image).stdout)
            report.append(f"image {image}: {size / 1e9:.2f} GB")
        t0 = time.monotonic()
        s.compose("up", "--detach", "--wait", "--wait-timeout", "900", timeout=1200)
        report.append(
            f"compose up --wait (postgres, mlflow, train, api healthy): {time.monotonic() - t0:.0f} s"
        )
        yield s
    finally:
        t0 = time.monotonic()
        # Containers, networks, named volumes and every image a service uses or built.
        s.compose(
            "down",
            "--volumes",
            "--rmi",
            "all",
            "--remove-orphans",
            "--timeout",
            "20",
            timeout=600,
            check=False,
        )
        for image in OFFLINE_BASES if offline else OFFICIAL_BASES:
            docker_daemon.run("image", "rm", "--force", image, check=False)
        # The build cache goes with the daemon's data root when the scratch directory is removed
        # (conftest checks that it is); pruning it here first only deletes the same files slower.
        leftovers = {
            what: docker_daemon.run(*command).stdout.split()
            for what, command in {
                "containers": ("ps", "--all", "--quiet"),
                "volumes": ("volume", "ls", "--quiet"),
                "networks": ("network", "ls", "--quiet", "--filter", "type=custom"),
                "images": ("image", "ls", "--all", "--quiet"),
            }.items()
        }
        report.append(f"teardown (down -v --rmi all, base images): {time.monotonic() - t0:.0f} s")
        report.append(f"whole stack test: {time.monotonic() - started:.0f} s")
        assert not any(leftovers.values()), f"teardown left {leftovers}"


def python_in(stack: Stack, image: str, code: str) -> str:
    return stack.daemon.run("run", "--rm", "--entrypoint", "python", image, "-c", code).stdout.strip()


def test_images_pin_one_mlflow_and_carry_no_dev_extras(stack: Stack) -> None:
    pinned = re.search(r"^mlflow==(\S+)", (DOCKER / "constraints.txt").read_text(), re.M).group(1)
    probe = "import importlib.metadata as m; print(m.version('mlflow'))"
    assert python_in(stack, "wdrec:0.1.0", probe) == python_in(stack, "wdrec-mlflow:0.1.0", probe) == pinned

    dev = ["pytest", "hypothesis", "ruff", "mypy", "schemathesis", "httpx", "psycopg"]
    found = python_in(
        stack, "wdrec:0.1.0", f"import importlib.util as u; print([m for m in {dev!r} if u.find_spec(m)])"
    )
    assert found == "[]", f"dev extras in the production image: {found}"
    # The build secret (pip's CA bundle) is mounted only while pip runs: no trace in either image.
    for image in ("wdrec:0.1.0", "wdrec-mlflow:0.1.0"):
        config = json.loads(stack.daemon.run("image", "inspect", image).stdout)[0]["Config"]
        assert not [variable for variable in config.get("Env") or [] if variable.startswith("PIP_CERT")], (
            image
        )
        assert python_in(stack, image, "import os; print(os.path.exists('/run/secrets/pip_cert'))") == "False"


def test_stack_is_healthy_and_training_registered_the_champion(stack: Stack) -> None:
    for service in ("postgres", "mlflow", "api"):
        state = stack.container(service)["State"]
        assert state["Health"]["Status"] == "healthy", f"{service}: {state['Health']}"
    train = stack.container("train")["State"]
    assert (train["Status"], train["ExitCode"]) == ("exited", 0)
    assert "does not exist yet: training" in stack.compose("logs", "--no-color", "train").stdout

    # The tracking server keeps its runs and registry in PostgreSQL, not a file.
    tables = stack.compose(
        "exec", "-T", "postgres", "psql", "-U", "mlflow", "-d", "mlflow", "-tAc",
        "select count(*) from model_versions where name = 'wdrec'",
    ).stdout.strip()  # fmt: skip
    assert tables == "1"
    champion = stack.client().get_model_version_by_alias("wdrec", "champion")
    assert champion.version == "1"


def test_recommend_through_the_published_port(stack: Stack) -> None:
    model = http_json(f"{stack.api}/v1/model")
    assert model["version"] == "1", model
    answer = http_json(f"{stack.api}/v1/recommend", {"user_id": "196", "k": 5})
    scores = [item["score"] for item in answer["items"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True), answer
    assert answer["model_version"] == "1"
    with urllib.request.urlopen(f"{stack.mlflow}/health", timeout=10) as response:
        assert response.status == 200


def test_a_second_up_does_not_retrain(stack: Stack) -> None:
    api_before = stack.container("api")
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "300", timeout=600)
    logs = stack.compose("logs", "--no-color", "train").stdout
    assert "is version 1" in logs and "not retraining" in logs, logs[-2000:]
    assert len(stack.client().search_model_versions("name = 'wdrec'")) == 1
    api_after = stack.container("api")
    assert (
        api_after["Id"] == api_before["Id"]
        and api_after["State"]["StartedAt"] == api_before["State"]["StartedAt"]
    )


def wait_for_version(stack: Stack, version: str) -> None:
    """Until /v1/model reports ``version``: at most two polls, plus loading and probing the bundle."""
    bound = POLL_SECONDS * 2 + 30
    start, seen = time.monotonic(), None
    while time.monotonic() - start < bound:
        try:
            seen = http_json(f"{stack.api}/v1/model", timeout=5)["version"]
        except (urllib.error.URLError, OSError) as error:
            pytest.fail(f"the API stopped answering while it reloaded: {error}")
        if seen == version:
            return
        time.sleep(0.5)
    pytest.fail(f"/v1/model still reports version {seen} {bound} s after the alias moved to {version}")


def test_the_api_follows_a_moved_champion_without_a_restart(stack: Stack) -> None:
    api_before = stack.container("api")["State"]
    # An explicit retrain: `run` with a command of its own bypasses the guard.
    stack.compose(
        "run", "--rm", "train", "wdrec", "fit", "--config", "/app/configs/movielens100k.yaml",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "10", "--trainer.limit_val_batches", "10",
        timeout=1200,
    )  # fmt: skip
    client = stack.client()
    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'wdrec'"))
    assert versions == [1, 2]
    # The retrain moves the alias itself when it beats version 1: let the API settle on whatever
    # the alias names now, then move it from the host to the other version.
    current = client.get_model_version_by_alias("wdrec", "champion").version
    wait_for_version(stack, current)
    target = "1" if current == "2" else "2"
    client.set_registered_model_alias("wdrec", "champion", target)
    moved = time.monotonic()
    wait_for_version(stack, target)
    stack.daemon.report.append(f"alias moved -> /v1/model reports it: {time.monotonic() - moved:.1f} s")
    answer = http_json(f"{stack.api}/v1/recommend", {"user_id": "196", "k": 3})
    assert answer["model_version"] == target

    api_after = stack.container("api")["State"]
    assert api_after["StartedAt"] == api_before["StartedAt"] and api_after["Status"] == "running"
    assert stack.container("api")["RestartCount"] == 0
    assert api_after["Health"]["Status"] == "healthy"
