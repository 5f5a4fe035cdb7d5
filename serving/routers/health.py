from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serving.deps import StoreDep
from serving.middleware import request_info
from serving.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (whether or not a model is loaded)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health, "description": "no model loaded"}})
async def readyz(request: Request, store: StoreDep) -> Health | JSONResponse:
    """200 once a model is loaded and probed, else 503."""
    model = store.current
    if model is None:
        return JSONResponse(status_code=503, content={"status": "loading", "detail": "no model loaded"})
    info = request_info(request.scope)
    if info is not None:
        info.model_version = model.info.version
    return Health(status="ready", model_version=model.info.version)
