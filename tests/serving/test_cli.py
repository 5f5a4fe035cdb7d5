"""``wdrec-serve`` as a real process: serves the registry champion over HTTP, refuses bad models."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from servers import free_port, serve_env, wdrec_serve


def test_wdrec_serve_serves_the_champion_over_http(trained_run, tmp_path: Path) -> None:  # noqa: ANN001
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w+")
    process = subprocess.Popen(
        [*wdrec_serve(), "--model", "models:/wdrec@champion", "--port", str(port)],
        env=serve_env(trained_run.tracking_uri), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready in 90 s"
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/v1/model").json()["version"] == "1"
            response = client.post("/v1/recommend", json={"user_id": 196, "k": 5}, headers={"X-Request-ID": "cli-1"})
            assert response.status_code == 200 and response.headers["x-request-id"] == "cli-1"
            assert [i["score"] for i in response.json()["items"]] == sorted((i["score"] for i in response.json()["items"]), reverse=True)
            scores = client.post("/v1/score", json={"user_id": "196", "item_ids": ["242", "302"]}).json()["scores"]
            assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
            assert client.post("/v1/score", content=b'{"user_id": "196"}').status_code == 415
            reload = client.post("/admin/reload", headers={"Authorization": "Bearer cli-token"})
            assert reload.status_code == 200 and reload.json()["new_version"] == "1"
            assert 'route="/v1/recommend",status="200"' in client.get("/metrics").text
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines() if line.startswith("{")]
    access = next(line for line in lines if line.get("request_id") == "cli-1")
    assert (access["path"], access["status"], access["model_version"]) == ("/v1/recommend", 200, "1")
    assert "latency_ms" in access


@pytest.mark.parametrize("case", ["corrupted", "unknown alias", "no model", "no candidates"])
def test_wdrec_serve_refuses_a_bad_model_in_one_line(case: str, corrupted_bundle, trained_run, tmp_path: Path) -> None:  # noqa: ANN001
    model = {"corrupted": ["--model", str(corrupted_bundle)], "unknown alias": ["--model", "models:/wdrec@nope"], "no model": [],
             "no candidates": ["--model", "models:/wdrec@champion", "--retrieval", "two_stage", "--candidates", "0"]}[case]  # fmt: skip
    result = subprocess.run(
        [*wdrec_serve(), *model, "--port", str(free_port())],
        env=serve_env(trained_run.tracking_uri), cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    last = output.splitlines()[-1]
    assert last.startswith("wdrec-serve: ")
    expected = {"corrupted": "weights.safetensors", "unknown alias": "nope", "no model": "--model", "no candidates": "WDREC_CANDIDATES"}[case]
    assert expected in last, output
