"""``POST /admin/reload``: swap in a new model without a restart (bearer token, WDREC_ADMIN_TOKEN)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, status
from starlette.concurrency import run_in_threadpool

from serving.deps import AdminDep, StoreDep
from serving.model_store import ModelLoadError
from serving.schemas import ErrorResponse, ReloadRequest, ReloadResponse

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        400: {"model": ErrorResponse, "description": "body is not valid Unicode text (not UTF-8, or an unpaired surrogate escape)"},
        401: {"model": ErrorResponse, "description": "no bearer token"},
        403: {"model": ErrorResponse, "description": "wrong token, or admin disabled (no WDREC_ADMIN_TOKEN)"},
        409: {"model": ErrorResponse, "description": "the new model failed to load or probe; the old one is still served"},
        413: {"model": ErrorResponse, "description": "body larger than max_body_bytes"},
        415: {"model": ErrorResponse, "description": "body not sent as Content-Type: application/json"},
        422: {"model": ErrorResponse, "description": "invalid field (the detail names it)"},
    },
)
async def reload(store: StoreDep, body: Annotated[ReloadRequest | None, Body()] = None) -> ReloadResponse:
    """Load a model beside the current one, probe it, then swap; requests in flight finish on the old one."""
    uri = (body.model if body else None) or store.uri
    try:
        old, new = await run_in_threadpool(store.load, uri)
    except ModelLoadError as error:
        current = store.current
        kept = "no model is loaded" if current is None else f"still serving version {current.info.version}"
        raise HTTPException(status.HTTP_409_CONFLICT, f"reload failed: {error}; {kept}") from None
    return ReloadResponse(
        old_version=None if old is None else old.info.version, new_version=new.info.version, model=uri, loaded_at=new.info.loaded_at
    )
