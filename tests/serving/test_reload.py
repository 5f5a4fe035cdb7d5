"""Loading and reloading models: registry URIs, hot swaps, refusals, and requests during a swap."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient  # conftest imported it first, silencing its warning

from serving.loader import ModelLoadError
from serving.main import create_app


def metric(text: str, name: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(name + " ")).split()[-1])


# ---------------------------------------------------------------------- startup
def test_serves_the_registry_champion(trained_run, make_settings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_run.tracking_uri)
    with TestClient(create_app("models:/wdrec@champion", make_settings())) as client:
        info = client.get("/v1/model").json()
        assert (info["name"], info["version"], info["run_id"]) == ("wdrec", "1", trained_run.run_id)
        assert info["source"] == "models:/wdrec@champion"
        assert client.post("/v1/recommend", json={"user_id": "196", "k": 3}).json()["model_version"] == "1"
    with TestClient(create_app("models:/wdrec/1", make_settings())) as client:
        assert client.get("/v1/model").json()["version"] == "1"


def test_startup_refuses_a_corrupted_bundle(corrupted_bundle, make_settings) -> None:  # noqa: ANN001
    with pytest.raises(ModelLoadError, match="weights.safetensors"), TestClient(create_app(str(corrupted_bundle), make_settings())):
        pass


@pytest.mark.parametrize("uri", ["models:/wdrec@no-such-alias", "models:/no-such-model/1"])
def test_startup_refuses_an_unknown_model(uri: str, trained_run, make_settings, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_run.tracking_uri)
    with pytest.raises(ModelLoadError, match="not found in the MLflow registry"), TestClient(create_app(uri, make_settings())):
        pass


def test_startup_refuses_a_missing_directory(tmp_path, make_settings) -> None:  # noqa: ANN001
    with pytest.raises(ModelLoadError, match="metadata.json missing"), TestClient(create_app(str(tmp_path / "nothing"), make_settings())):
        pass


def test_without_a_model_the_app_is_up_but_not_ready(bundle, make_settings, admin) -> None:  # noqa: ANN001
    with TestClient(create_app(None, make_settings(model=None))) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/recommend", json={"user_id": "196"}).status_code == 503
        assert client.get("/v1/model").status_code == 503
        assert client.post("/admin/reload", headers=admin).status_code == 409  # nothing to reload
        loaded = client.post("/admin/reload", json={"model": str(bundle)}, headers=admin)
        assert loaded.status_code == 200 and loaded.json()["old_version"] is None
        assert client.get("/readyz").status_code == 200


# ----------------------------------------------------------------------- reload
def test_reload_swaps_in_a_new_bundle(fresh_client, bundle_v2, admin) -> None:  # noqa: ANN001
    response = fresh_client.post("/admin/reload", json={"model": str(bundle_v2)}, headers=admin)
    assert response.status_code == 200, response.text
    assert (response.json()["old_version"], response.json()["new_version"]) == ("1", "2")
    assert fresh_client.get("/v1/model").json()["version"] == "2"
    assert fresh_client.post("/v1/recommend", json={"user_id": "196", "k": 2}).json()["model_version"] == "2"
    text = fresh_client.get("/metrics").text
    assert metric(text, "wdrec_model_reloads_total") == 1.0
    assert 'version="2"' in next(line for line in text.splitlines() if line.startswith("wdrec_model_info{"))


def test_reload_without_a_body_reloads_the_start_uri(fresh_client, bundle, admin) -> None:  # noqa: ANN001
    before = fresh_client.get("/v1/model").json()["loaded_at"]
    response = fresh_client.post("/admin/reload", headers=admin)
    assert response.status_code == 200 and response.json()["model"] == str(bundle)
    assert response.json()["new_version"] == "1" and fresh_client.get("/v1/model").json()["loaded_at"] >= before


def test_failed_reload_keeps_the_old_model(fresh_client, corrupted_bundle, admin) -> None:  # noqa: ANN001
    response = fresh_client.post("/admin/reload", json={"model": str(corrupted_bundle)}, headers=admin)
    assert response.status_code == 409
    assert "weights.safetensors" in response.json()["detail"] and "still serving version 1" in response.json()["detail"]
    assert fresh_client.get("/readyz").status_code == 200
    assert fresh_client.post("/v1/recommend", json={"user_id": "196", "k": 2}).status_code == 200
    text = fresh_client.get("/metrics").text
    assert metric(text, "wdrec_model_reload_failures_total") == 1.0 and metric(text, "wdrec_model_reloads_total") == 0.0


def test_admin_needs_the_bearer_token(fresh_client, bundle, make_settings) -> None:  # noqa: ANN001
    assert fresh_client.post("/admin/reload").status_code == 401
    assert fresh_client.post("/admin/reload", headers={"Authorization": "Basic abc"}).status_code == 401
    wrong = fresh_client.post("/admin/reload", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403 and wrong.json()["detail"] == "wrong admin token"
    with TestClient(create_app(str(bundle), make_settings(admin_token=None))) as client:
        disabled = client.post("/admin/reload", headers={"Authorization": "Bearer anything"})
        assert disabled.status_code == 403 and "disabled" in disabled.json()["detail"]


def test_reload_under_concurrent_requests_drops_nothing(fresh_client, bundle, bundle_v2, admin) -> None:  # noqa: ANN001
    """Threads hammer /v1/recommend while the model is swapped back and forth: every request succeeds."""
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()
    lock = threading.Lock()
    short = [0]  # responses with fewer than k items

    def hammer(user: int) -> None:
        while not stop.is_set():
            response = fresh_client.post("/v1/recommend", json={"user_id": str(user), "k": 10})
            with lock:
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    body = response.json()
                    versions[body["model_version"]] += 1
                    short[0] += len(body["items"]) != 10

    threads = [threading.Thread(target=hammer, args=(user,)) for user in (1, 196, 500, 900)]
    for thread in threads:
        thread.start()
    try:
        for target in (bundle_v2, bundle, bundle_v2, bundle):
            response = fresh_client.post("/admin/reload", json={"model": str(target)}, headers=admin)
            assert response.status_code == 200, response.text
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert set(statuses) == {200}, statuses
    assert short[0] == 0
    assert sum(statuses.values()) >= 8 and set(versions) <= {"1", "2"}
    assert fresh_client.get("/v1/model").json()["version"] == "1"
    assert metric(fresh_client.get("/metrics").text, "wdrec_model_reloads_total") == 4.0


def test_alias_polling_follows_the_champion(trained_run, make_settings, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """With poll_seconds, moving the alias in the registry swaps the served model (a copy of the registry)."""
    store = tmp_path / "mlflow.db"
    shutil.copy(trained_run.tracking_uri.removeprefix("sqlite:///"), store)
    uri = f"sqlite:///{store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with TestClient(create_app("models:/wdrec@champion", make_settings(poll_seconds=0.2))) as client:
        assert client.get("/v1/model").json()["version"] == "1"
        registry = MlflowClient(tracking_uri=uri)
        first = registry.get_model_version("wdrec", "1")
        second = registry.create_model_version("wdrec", first.source, run_id=first.run_id)
        registry.set_registered_model_alias("wdrec", "champion", second.version)
        deadline = time.monotonic() + 15
        while client.get("/v1/model").json()["version"] != str(second.version):
            assert time.monotonic() < deadline, "the poller did not pick up the new champion"
            time.sleep(0.1)
        assert client.post("/v1/recommend", json={"user_id": "1", "k": 1}).status_code == 200
