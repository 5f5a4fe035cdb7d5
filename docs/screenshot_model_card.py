"""Screenshot of a registered version's model card in the MLflow UI (``docs/images/model_card.png``).

    .venv/bin/wdrec fit --config configs/movielens100k.yaml   # registers wdrec version 1 into ./mlflow.db
    .venv/bin/python docs/screenshot_model_card.py --store mlflow.db --out docs/images/model_card.png

Starts ``mlflow ui`` over the store on a free local port (one worker), opens the version page in
headless Chromium (Debian's ``chromium`` driven by Playwright, ``pip install -e ".[browser]"``;
``$WDREC_CHROMIUM`` names another executable), closes the assistant side panel, takes the page
down to ``--height`` pixels, stores the PNG with a reduced palette (UI screenshots need few
colours), and stops the server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"mlflow ui exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"mlflow ui did not answer {url} within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, type=Path, help="the sqlite tracking store (mlflow.db)")
    parser.add_argument("--name", default="wdrec", help="registered model name")
    parser.add_argument("--version", default="1")
    parser.add_argument("--out", type=Path, default=Path("docs/images/model_card.png"))
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1900, help="how much of the page to take, in pixels")
    args = parser.parse_args()
    chromium = os.environ.get("WDREC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no Chromium: apt-get install chromium, or set WDREC_CHROMIUM to its path")
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{args.store.resolve()}",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        # Its own session: the server's workers and job runners are stopped together, by its group id.
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_up(f"http://127.0.0.1:{port}/health", server)
            take(f"http://127.0.0.1:{port}/#/models/{args.name}/versions/{args.version}", chromium, args)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB")


def take(url: str, chromium: str, args: argparse.Namespace) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(url)
        page.get_by_role("heading", name=f"{args.name}: model card").wait_for(timeout=60_000)
        close = page.get_by_role("button", name="Close")  # the assistant panel: not ours, and it takes a third
        if close.count():
            close.first.click()
        page.wait_for_timeout(1000)
        png = args.out.with_suffix(".raw.png")
        page.screenshot(path=str(png))
        browser.close()
    Image.open(png).convert("RGB").quantize(colors=64).save(args.out, optimize=True)
    png.unlink()


if __name__ == "__main__":
    main()
