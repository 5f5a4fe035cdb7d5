"""Where a request's scoring runs: on the event loop for a quick model, else on the scoring threads."""

from __future__ import annotations

import threading
import warnings

import pytest
from starlette.requests import Request

from serving.deps import get_scoring
from serving.main import create_app

with warnings.catch_warnings():  # starlette's TestClient warns about httpx at import
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient


@pytest.mark.parametrize(("inline_score_ms", "on_the_loop"), [(1e9, True), (0.0, False)])
def test_quick_models_score_on_the_event_loop(bundle, make_settings, inline_score_ms: float, on_the_loop: bool) -> None:  # noqa: ANN001
    app = create_app(str(bundle), make_settings(inline_score_ms=inline_score_ms))
    with TestClient(app) as client:
        request_ms = client.get("/v1/model").json()["request_ms"]
        assert 0 < request_ms < 10_000
        request = Request({"type": "http", "app": app, "method": "POST", "path": "/v1/recommend", "headers": []})

        async def scoring_thread() -> tuple[threading.Thread, threading.Thread]:
            scoring = await get_scoring(request, app.state.store.current)
            return threading.current_thread(), await scoring(threading.current_thread)

        loop_thread, work_thread = client.portal.call(scoring_thread)
    assert (work_thread is loop_thread) is on_the_loop
    if not on_the_loop:
        assert work_thread.name.startswith("wdrec-score")
