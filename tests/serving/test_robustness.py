"""No input gets a 500: arbitrary JSON against the endpoints, and the last-resort error handler."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.metrics import Metrics
from serving.middleware import RequestContext
from serving.model_store import ModelStore

leaves = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
ids = st.one_of(st.sampled_from(["1", "50", "242", "196", 196, 50, "nope", ""]), values)
fields = {
    "user_id": ids,
    "k": st.one_of(st.integers(-5, 200), values),
    "exclude_seen": st.one_of(st.booleans(), values),
    "candidates": st.one_of(st.lists(ids, max_size=6), values),
    "item_ids": st.one_of(st.lists(ids, max_size=6), values),
    "exclude_items": st.one_of(st.lists(ids, max_size=6), values),
    "user_features": st.one_of(
        st.dictionaries(st.sampled_from(["age", "gender", "occupation", "history", "zip_code", "x"]), values, max_size=4), values
    ),
    "filters": st.one_of(st.dictionaries(st.sampled_from(["genres", "release_year", "title", "x"]), values, max_size=2), values),
}
bodies = st.one_of(st.fixed_dictionaries({}, optional=fields), values)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(["/v1/recommend", "/v1/score", "/admin/reload"]), body=bodies)
def test_arbitrary_json_never_gets_a_500(client, path: str, body: object) -> None:  # noqa: ANN001
    response = client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert response.status_code < 500, (body, response.text)
    assert "detail" in response.json() or response.status_code == 200


def test_an_unexpected_error_is_a_generic_500_with_the_request_id() -> None:
    async def broken(scope, receive, send) -> None:  # noqa: ANN001 - a downstream app with a bug
        raise RuntimeError("/secret/path/to/file.py line 12")

    app = RequestContext(broken, Metrics(ModelStore(None)), routes=set())
    response = TestClient(app).get("/anything", headers={"X-Request-ID": "abc-1"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "abc-1"
    assert response.json()["request_id"] == "abc-1" and "secret" not in response.text and "Traceback" not in response.text
