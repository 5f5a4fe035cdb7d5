"""``POST /admin/reload``: swap in a new model without a restart (bearer token, WDREC_ADMIN_TOKEN)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, status
from starlette.concurrency import run_in_threadpool

from serving.deps import AdminDep, StoreDep
from serving.model_store import ModelLoadError
from serving.schemas import ReloadRequest, ReloadResponse

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        401: {"description": "no bearer token"},
        403: {"description": "wrong token, or admin disabled (no WDREC_ADMIN_TOKEN)"},
        409: {"description": "the new model failed to load or probe; the old one is still served"},
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
