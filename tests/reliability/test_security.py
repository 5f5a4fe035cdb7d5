"""Security: admin auth, no pickle execution when loading models, loopback by default, no
traces or paths in error bodies, request size limits; against the app and a real server."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from paths import REPO_ROOT
from servers import Server, copy_bundle, running_server, serve_env

from serving.config import Settings
from serving.loader import ModelLoadError, load_model
from serving.main import create_app
from wdrec.export.bundle import ITEMS, METADATA, WEIGHTS, BundleError, read_bundle
from wdrec.export.cli import main as export_main

with warnings.catch_warnings():  # starlette's TestClient warns about httpx at import
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

TOKEN = "s3cret-admin-token"
LIMITS = {"max_body_bytes": "16384", "max_ids": "50", "max_k": "100"}
TRACE_MARKERS = ("Traceback", 'File "', "site-packages", ".py\"", str(REPO_ROOT), sys.prefix)
ADMIN = {"Authorization": "Bearer cli-token"}  # the token servers.serve_env gives the real server


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def app_client(bundle_a: Path) -> Iterator[TestClient]:
    with TestClient(create_app(str(bundle_a), Settings(admin_token=TOKEN))) as client:
        yield client


@pytest.fixture(scope="module")
def server(bundle_a: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``wdrec-serve`` started with no --host (the default bind), small limits."""
    workdir = tmp_path_factory.mktemp("security-server")
    env = serve_env(f"sqlite:///{workdir / 'mlflow.db'}", **LIMITS)
    with running_server(["--model", str(bundle_a)], env, workdir) as server:
        yield server


class PlantMarker:
    """Unpickling this creates ``path`` (``open(path, "w")``): proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A .ckpt shaped like Lightning's whose unpickling would run code (torch.save pickles it)."""
    torch.save({"state_dict": {"net.x": PlantMarker(marker)}, "model_config": {}, "feature_spec": {},
                "wdrec_config": "data: {}"}, path)  # fmt: skip
    return path


# ------------------------------------------------------------------ admin auth
@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        ("Basic " + TOKEN, 401),
        (TOKEN, 401),
        ("Bearer wrong", 403),
        ("Bearer " + TOKEN[:-1], 403),  # a prefix of the token
        ("Bearer " + TOKEN + "x", 403),  # the token and more
        ("Bearer " + TOKEN.upper(), 403),
        ("Bearer " + "x" * 4096, 403),
    ],
)
def test_admin_rejects_missing_and_wrong_tokens(app_client: TestClient, authorization: str | None, status: int) -> None:
    before = app_client.get("/v1/model").json()["loaded_at"]
    reloads = app_client.app.state.store.reloads
    headers = {} if authorization is None else {"Authorization": authorization}
    response = app_client.post("/admin/reload", headers=headers)
    assert response.status_code == status, response.text
    assert TOKEN not in response.text and "detail" in response.json()
    assert app_client.app.state.store.reloads == reloads and app_client.get("/v1/model").json()["loaded_at"] == before


def test_admin_accepts_the_token_and_is_off_without_one(app_client: TestClient, bundle_a: Path) -> None:
    assert app_client.post("/admin/reload", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    for token in (None, ""):
        with TestClient(create_app(str(bundle_a), Settings(admin_token=token))) as client:
            for header in ("Bearer ", "Bearer anything", f"Bearer {TOKEN}"):
                response = client.post("/admin/reload", headers={"Authorization": header})
                assert response.status_code == 403 and "disabled" in response.json()["detail"]


def test_admin_over_http_rejects_missing_and_wrong_tokens(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers={"Authorization": "Bearer cli-tokex"}).status_code == 403
        assert client.post("/admin/reload", headers={"Authorization": "Bearer cli-token"}).status_code == 200


# ------------------------------------------------------------------ no pickle execution
def test_a_malicious_checkpoint_is_refused_by_wdrec_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    checkpoint = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    assert not marker.exists()
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(checkpoint), "--output", str(tmp_path / "bundle")])
    assert str(exit_info.value.code).startswith("wdrec-export: ") and "Weights only load failed" in str(exit_info.value.code)
    assert not marker.exists() and not (tmp_path / "bundle").exists()


def test_a_malicious_checkpoint_is_refused_on_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``wdrec fit --ckpt_path evil.ckpt``: Lightning loads it with torch's weights-only unpickler."""
    from wdrec.job import run

    marker = tmp_path / "PWNED"
    checkpoint = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    (tmp_path / "log.csv").write_text("user,item,ts\n" + "".join(f"u{u},i{(u * 7 + t) % 40},{t}\n" for u in range(20) for t in range(6)))
    config = {"seed_everything": 1, "trainer": {"max_epochs": 1, "enable_progress_bar": False},
              "registry": {"enabled": False},
              "data": {"source": {"class_path": "wdrec.data.sources.files.Files",
                                  "init_args": {"interactions": str(tmp_path / "log.csv"), "user_column": "user",
                                                "item_column": "item", "timestamp_column": "ts"}},
                       "batch_size": 64, "data_dir": str(tmp_path / "cache")}}  # fmt: skip
    (tmp_path / "config.yaml").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        run(["fit", "--config", str(tmp_path / "config.yaml"), f"--ckpt_path={checkpoint}"])
    assert not marker.exists()


def _plant_pickle(bundle: Path, name: str, marker: Path, fix_checksum: bool) -> Path:
    """Replace a bundle file by a pickle; optionally record the pickle's sha256 as if it belonged there."""
    (bundle / name).write_bytes(pickle.dumps(PlantMarker(marker)))
    if fix_checksum:
        metadata = json.loads((bundle / METADATA).read_text())
        metadata["sha256"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
        (bundle / METADATA).write_text(json.dumps(metadata))
    return bundle


@pytest.mark.parametrize("name", [WEIGHTS, ITEMS])
@pytest.mark.parametrize("fix_checksum", [False, True], ids=["checksum-kept", "checksum-forged"])
def test_a_bundle_file_replaced_by_a_pickle_is_refused(
    bundle_a: Path, app_client: TestClient, tmp_path: Path, name: str, fix_checksum: bool
) -> None:
    marker = tmp_path / "PWNED"
    bundle = _plant_pickle(copy_bundle(bundle_a, tmp_path / "bundle"), name, marker, fix_checksum)
    with pytest.raises(BundleError) as refused:
        read_bundle(bundle)
    assert name in str(refused.value) or (fix_checksum and name == WEIGHTS), refused.value
    with pytest.raises(ModelLoadError):
        load_model(str(bundle))
    version = app_client.get("/v1/model").json()["version"]
    response = app_client.post("/admin/reload", json={"model": str(bundle)}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 409, response.text
    assert f"still serving version {version}" in response.json()["detail"]
    assert app_client.get("/v1/model").json()["version"] == version
    assert not marker.exists()


# ------------------------------------------------------------------ bind address
def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def test_the_server_binds_loopback_by_default(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WDREC_HOST", raising=False)
    assert Settings().host == "127.0.0.1"
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("no /proc/net/tcp on this system")
    assert _listening(server.port) == ["0100007F"]  # 127.0.0.1 only: not 0.0.0.0, not [::]


# ------------------------------------------------------------------ error bodies
def bad_requests() -> list[tuple[str, str, dict, bytes | None]]:
    """(method, path, headers, body): bad in as many ways as there are layers."""
    json_type = {"Content-Type": "application/json"}
    out: list[tuple[str, str, dict, bytes | None]] = []
    for path in ("/v1/recommend", "/v1/score"):
        for body in (b"", b"{", b"null", b"[]", b'"x"', b"1e999", b'{"user_id": null}', b'{"user_id": {"a": 1}}',
                     b'{"user_id": "1", "k": -1}', b'{"user_id": "1", "k": 1e300}', b'{"user_id": "1", "k": 10000000000000000000000}',
                     b'{"user_id": "1", "item_ids": ["no-such-item"]}', b'{"user_id": "1", "item_ids": [[]]}',
                     b'{"user_id": "1", "candidates": ["nope"]}', b'{"user_id": "1", "filters": {"nope": 1}}',
                     b'{"user_id": "1", "filters": {"genres": []}}', b'{"user_id": "x", "user_features": {"age": "old"}}',
                     b'{"user_id": "x", "user_features": {"age": [1, [2]]}}', b'{"user_id": "' + b"9" * 300 + b'"}',
                     b'{"user_id": "1", "extra": 1}', b'{"user_id": "1", "item_ids": ' + json.dumps([str(i) for i in range(60)]).encode() + b"}",
                     b"\xff\xfe\xfd", b'{"user_id": "\\ud800"}', b'{"user_id": "1", "item_ids": ["\\udc00"]}',
                     b'{"user_id": "1", "filters": {"\\ud800": 1}}', b'{"user_id": "1", "filters": {"genres": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
                     b'{"user_id": "1"' + b" " * 20_000 + b"}"):  # fmt: skip
            out.append(("POST", path, json_type, body))
        out.append(("POST", path, {"Content-Type": "text/plain"}, b'{"user_id": "1"}'))
        out.append(("GET", path, {}, None))
    out += [("GET", "/nope", {}, None), ("GET", "/../../etc/passwd", {}, None), ("DELETE", "/v1/model", {}, None),
            ("POST", "/admin/reload", {}, b"{}"), ("POST", "/admin/reload", {"Authorization": "Bearer x"}, b"{}"),
            ("POST", "/admin/reload", {**ADMIN, **json_type}, b'{"model": 7}'),
            ("POST", "/admin/reload", {**ADMIN, **json_type}, b'{"model": "models:/nope@x"}'),
            ("POST", "/admin/reload", {**ADMIN, **json_type}, b'{"model": "no/such/bundle"}'),
            ("GET", "/v1/model/extra", {}, None), ("PUT", "/admin/reload", {}, b"{}")]  # fmt: skip
    return out


def test_error_bodies_show_no_trace_and_no_path(
    server: Server, bundle_a: Path, tmp_path_factory: pytest.TempPathFactory, report  # noqa: ANN001
) -> None:
    """No trace in any error body; no server path in any answer to a client without the admin token
    (a refused reload tells the operator which file or store failed: that is its job)."""
    server_paths = (str(bundle_a), str(server.log.parent), str(tmp_path_factory.getbasetemp()))
    requests = bad_requests()
    statuses = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for method, path, headers, body in requests:
            response = client.request(method, path, headers=headers, content=body)
            statuses.append(response.status_code)
            assert 400 <= response.status_code < 500, (method, path, body and body[:80], response.status_code, response.text[:300])
            markers = TRACE_MARKERS if headers.get("Authorization") == ADMIN["Authorization"] else (*TRACE_MARKERS, *server_paths)
            leaked = [marker for marker in markers if marker in response.text]
            assert not leaked, (method, path, leaked, response.text[:500])
        assert client.get("/readyz").status_code == 200  # still serving
    report("error_bodies", requests=len(requests), statuses=sorted(set(statuses)), leaks=0)


# ------------------------------------------------------------------ size limits
def _raw(port: int, request: bytes, timeout: float = 30.0) -> bytes:
    """Send raw bytes to the server on loopback and read the answer until the server closes or answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < 12:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        return data


def test_request_size_limits_hold_over_http(server: Server) -> None:
    limit = int(LIMITS["max_body_bytes"])
    with httpx.Client(base_url=server.url, timeout=30, headers={"Content-Type": "application/json"}) as client:
        at_limit = json.dumps({"user_id": "1", "item_ids": ["1"]}).encode().ljust(limit)
        assert client.post("/v1/score", content=at_limit).status_code == 200
        assert client.post("/v1/score", content=at_limit + b" ").status_code == 413
        # No Content-Length (chunked): the bytes actually received count.
        chunks = (b" " * 4096 for _ in range(64))
        response = client.post("/v1/score", content=chunks)
        assert response.status_code == 413 and response.json()["field"] == "body"
        ids = [str(i) for i in range(51)]
        assert client.post("/v1/score", json={"user_id": "1", "item_ids": ids}).status_code == 422
        assert client.post("/v1/recommend", json={"user_id": "1", "k": 101}).status_code == 422
    # A Content-Length far beyond the limit is refused before any body is read.
    answer = _raw(server.port, b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 99999999999\r\n\r\n{")  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # A header block of 64 KiB: uvicorn's HTTP parser refuses it (or drops the connection); never a 5xx.
    answer = _raw(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
    assert not answer.startswith((b"HTTP/1.1 5", b"HTTP/1.0 5")), answer[:200]
    assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200
