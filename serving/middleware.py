"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers responses and costs a task per request).

- :class:`RequestContext` (outermost): request id (``X-Request-ID`` or a new one, echoed
  back), one JSON log line and the Prometheus observations per request, and the last
  guard: an unexpected exception becomes a generic 500 with the request id, never a trace.
- :class:`BodyGuard`: POST bodies at most ``max_body_bytes`` (Content-Length and the bytes
  actually received: 413), JSON only (415), valid Unicode (400: not UTF-8, or an unpaired
  surrogate escape such as ``"\\ud800"``, which parses but cannot be written back as UTF-8).
  FastAPI >= 0.16x silently reads no body without ``Content-Type: application/json``, which
  would otherwise look like a missing field.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics

access_log = logging.getLogger("wdrec.serving.access")
error_log = logging.getLogger("wdrec.serving")
REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


@dataclass
class RequestInfo:
    """What a request carries through the app; handlers fill in ``model_version``."""

    request_id: str
    model_version: str | None = None


def request_info(scope: Scope) -> RequestInfo | None:
    return scope.get("wdrec")


async def send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, routes: set[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        info = RequestInfo(given if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex)
        scope["wdrec"] = info
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, info.request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            error_log.exception("unhandled error", extra={"request_id": info.request_id, "path": scope["path"]})
            status = 500
            if not started:
                body = {"detail": "internal error; quote the request id when reporting it", "request_id": info.request_id}
                await send_json(send, 500, body, [(REQUEST_ID_HEADER, info.request_id.encode())])
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            path = getattr(route, "path", None) or (scope["path"] if scope["path"] in self.routes else "other")
            self.metrics.observe(scope["method"], path, status, seconds)
            access_log.info(
                "request",
                extra={"request_id": info.request_id, "method": scope["method"], "path": scope["path"], "status": status,
                       "latency_ms": round(seconds * 1000, 3), "model_version": info.model_version},
            )  # fmt: skip


class BodyGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._too_large(send)
            return
        # Read the body here (it is small, by the limit) so the real size is known before the app runs.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and not _is_json(headers.get(b"content-type", b"")):
            await send_json(send, 415, {"detail": "send the body as JSON with the header 'Content-Type: application/json'", "field": "Content-Type"})
            return
        try:
            body.decode("utf-8")  # RFC 8259: JSON between systems is UTF-8; FastAPI's own answer would be a bare 400
        except UnicodeDecodeError as error:
            await send_json(send, 400, {"detail": f"body: not UTF-8 text (byte {error.start})", "field": "body"})
            return
        if b"\\u" in body and _lone_surrogate(body):  # "\ud800" is valid JSON but no UTF-8 text: echoing it back fails
            await send_json(send, 400, {"detail": "body: a string holds an unpaired surrogate escape (\\ud800-\\udfff); "
                                                  "send valid Unicode text", "field": "body"})  # fmt: skip
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await send_json(send, 413, {"detail": f"request body larger than {self.limit} bytes", "field": "body"})


def _lone_surrogate(body: bytes) -> bool:
    """Whether the JSON text holds a string (or key) that no UTF-8 can carry: an unpaired surrogate escape."""
    try:
        json.dumps(json.loads(body), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):  # malformed or too deep: the app's own parser answers that
        return False
    return False


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
