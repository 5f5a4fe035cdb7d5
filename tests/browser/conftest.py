"""A real headless Chromium (Debian's ``chromium``, driven by Playwright) on a real ``wdrec-serve``.

`browser`-marked tests run only when selected (``pytest -m browser``, ``make test-browser``), so
that the default ``-m "not slow"`` run needs no browser. Playwright's own browser download is
unreachable here: it launches the system's Chromium by its path (``$WDREC_CHROMIUM``, else
``chromium`` on the PATH). Where there is none the tests skip, saying so.

Screenshots go to ``$WDREC_TEST_ARTIFACTS`` (default: ``artifacts/`` in the checkout, ignored by
git), ``browser/<name>.png``; the run's summary lists them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import REPO_ROOT
from servers import Server, running_server, serve_env
from suites import run_only_when_selected, summary_section

CHROMIUM_ENV = "WDREC_CHROMIUM"
ARTIFACTS_ENV = "WDREC_TEST_ARTIFACTS"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_only_when_selected(config, items, "browser")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # noqa: ANN001
    summary_section(terminalreporter, "browser screenshots", getattr(config, "_wdrec_screenshots", None))


def chromium_path() -> str | None:
    given = os.environ.get(CHROMIUM_ENV)
    return given if given else shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the session (each test opens its own context: no shared state)."""
    executable = chromium_path()
    if executable is None or not Path(executable).exists():
        pytest.skip(f"no Chromium here: apt-get install chromium, or set {CHROMIUM_ENV} to its path")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright missing: pip install -e '.[browser]'")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def page_server(trained_run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: ANN001
    """``wdrec-serve`` over the trained MovieLens-100k bundle, a real uvicorn process."""
    workdir = tmp_path_factory.mktemp("page-server")
    with running_server(["--model", str(trained_run.bundle)], serve_env(trained_run.tracking_uri), workdir) as server:
        yield server


@pytest.fixture(scope="session")
def screenshot(pytestconfig: pytest.Config):  # noqa: ANN201
    """``screenshot(page, name)``: a full-page PNG in the artifacts folder; returns its path."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or REPO_ROOT / "artifacts") / "browser"
    saved: list[Path] = []
    pytestconfig._wdrec_screenshots = saved  # type: ignore[attr-defined]

    def take(page, name: str) -> Path:  # noqa: ANN001
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        saved.append(path)
        print(f"screenshot: {path}")
        return path

    return take
