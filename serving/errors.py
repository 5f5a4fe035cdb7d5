"""Error bodies: always JSON ``{"detail": ...}`` naming the field; never a trace or a server path."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.catalogue import RequestError


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc[1:]] if loc and loc[0] == "body" else [str(p) for p in loc]
    return ".".join(parts) or "body"


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    loc = list(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        position = f" at character {loc[1]}" if len(loc) > 1 else ""
        return {"field": "body", "msg": f"malformed JSON{position}: {reason}".rstrip(": "), "type": "json_invalid"}
    if error.get("type") == "missing" and loc == ["body"]:
        return {"field": "body", "msg": "a JSON body is required", "type": "missing"}
    return {"field": _field(loc), "msg": error.get("msg", "invalid"), "type": error.get("type", "value_error")}


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # The submitted values are not echoed back: a 10,000-id list would return whole.
    return JSONResponse(status_code=422, content={"detail": [_problem(e) for e in exc.errors()]})


async def request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"detail": str(exc), "field": exc.field, **exc.extra})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RequestError, request_error)
