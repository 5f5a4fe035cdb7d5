"""API fuzzing: requests generated from the service's own OpenAPI schema (schemathesis) against
the in-process app serving a real bundle.

Every operation is driven with schema-valid (positive) and schema-violating (negative) data,
``/admin/reload`` both without and with the admin token. Each response must be no 5xx, carry
a documented status code and content type, match the documented schema for that status, and
a schema-violating request must get a 4xx. No error body may show a trace or a server path.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from paths import REPO_ROOT
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serving.config import Settings
from serving.main import create_app

# Not `positive_data_acceptance`: a schema-valid request may still be refused by what only the
# server knows (k above max_k, more ids than max_ids, an unknown item id): those are documented 422s.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]  # fmt: skip
# What must never appear in an error body (unless the request itself sent it, e.g. a reload path).
LEAK_MARKERS = ("Traceback", 'File "', "site-packages", str(REPO_ROOT), sys.prefix)
ROUTES = {"GET /healthz", "GET /readyz", "GET /v1/model", "GET /v1/users", "GET /v1/items/{item_id}/similar", "GET /metrics",
          "POST /v1/recommend", "POST /v1/score", "POST /admin/reload"}  # fmt: skip
EXAMPLES = {"POST /v1/recommend": 210, "POST /v1/score": 210, "POST /admin/reload": 75}  # per generation mode (and token)
MIN_REQUESTS = 1000
TOKEN = "fuzz-token"


def leaks(text: str, sent: str) -> list[str]:
    return [marker for marker in LEAK_MARKERS if marker in text and marker not in sent]


def test_generated_requests_get_documented_answers_and_never_a_5xx(bundle_a: Path, report) -> None:  # noqa: ANN001
    settings_ = Settings(admin_token=TOKEN, max_k=100, max_ids=50, max_body_bytes=16_384)
    app = create_app(str(bundle_a), settings_)
    config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": ["4XX"]}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.label for operation in operations} == ROUTES

    statuses: Counter[tuple[str, str, int]] = Counter()
    failures: list[str] = []
    unsatisfiable: list[str] = []

    def fuzz(session, operation, mode: GenerationMode, headers: dict[str, str] | None):  # noqa: ANN001, ANN202
        @settings(max_examples=EXAMPLES.get(operation.label, 20), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy(generation_mode=mode))
        def exercise(case) -> None:  # noqa: ANN001
            response = case.call(session=session, headers=headers)
            statuses[(operation.label, mode.value, response.status_code)] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, BaseExceptionGroup) as error:  # schemathesis' FailureGroup, or one failure
                # with the request as a curl command: hypothesis draws afresh each run, so the failure must carry its case
                failures.append(f"{operation.label} [{mode.value}] {str(error)[:1500]}\n{case.as_curl_command(headers)}")
            sent = f"{case.body!r} {case.query!r} {dict(case.headers or {})!r}"
            if response.status_code >= 400 and (found := leaks(response.text, sent)):
                failures.append(f"{operation.label}: {found} in {response.text[:500]}\n{case.as_curl_command(headers)}")

        return exercise

    start = time.perf_counter()
    try:
        with get_client(app) as session:
            for operation in operations:
                tokens = (None, f"Bearer {TOKEN}") if operation.label.startswith("POST /admin") else (None,)
                has_inputs = bool(list(operation.iter_parameters())) or bool(list(operation.body))
                # Without parameters or body (GET /healthz, ...) there is nothing to break: positive only.
                modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_inputs else (GenerationMode.POSITIVE,)
                for mode in modes:
                    for token in tokens:
                        try:
                            fuzz(session, operation, mode, {"Authorization": token} if token else None)()
                        except Unsatisfiable:
                            unsatisfiable.append(f"{operation.label} {mode.value}")
    finally:
        shutdown_lifespans()
    seconds = time.perf_counter() - start

    sent = sum(statuses.values())
    by_route = Counter({route: 0 for route in ROUTES})
    for (route, _, _), count in statuses.items():
        by_route[route] += count
    by_status = Counter()
    for (_, _, status), count in statuses.items():
        by_status[status] += count
    report("api_fuzzing", requests=sent, seconds=round(seconds, 1), failures=len(failures),
           server_errors=sum(c for s, c in by_status.items() if s >= 500), by_route=dict(by_route),
           by_status=dict(sorted(by_status.items())))  # fmt: skip
    assert not failures, f"{len(failures)} failing responses; first ones:\n" + "\n\n".join(failures[:5])
    assert sent >= MIN_REQUESTS, statuses
    assert all(by_route[route] > 0 for route in ROUTES), by_route
    assert all(status < 500 for status in by_status), by_status
    assert not unsatisfiable, unsatisfiable
    # Both kinds of data reached the handlers: accepted requests and refused ones.
    assert by_status[200] > 0 and by_status[422] > 0 and by_status[401] > 0


@pytest.mark.parametrize("path", ["/v1/recommend", "/v1/score", "/admin/reload"])
def test_negative_bodies_are_refused_before_the_handler(bundle_a: Path, path: str) -> None:
    """A few hand-picked bad bodies through the same ASGI transport: the schema's 4xx, naming the field."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(str(bundle_a), Settings(admin_token=TOKEN))) as client:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        for body in (b"{", b"[]", b'{"user_id": true}', b'{"user_id": "1", "k": "ten"}', b'{"model": 5}', b"\xff\xfe"):
            response = client.post(path, content=body, headers=headers)
            assert 400 <= response.status_code < 500, (body, response.text)
            detail = response.json()["detail"]
            assert detail and not leaks(response.text, body.decode("latin-1"))
