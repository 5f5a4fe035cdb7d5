"""``POST /admin/reload``: swap in a new model without a restart (bearer token, WDREC_ADMIN_TOKEN)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from serving.cluster import WorkerState
from serving.deps import AdminDep, ClusterDep, StoreDep
from serving.loader import ModelLoadError
from serving.schemas import ErrorResponse, ReloadRequest, ReloadResponse, WorkerStatus
from serving.served_model import ServedModel

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
        504: {"model": ErrorResponse, "description": "several workers: published, but not every worker served it within "
                                                     "reload_timeout; `lagging` names them, and they go on loading it"},
    },
)
async def reload(
    store: StoreDep, cluster: ClusterDep, body: Annotated[ReloadRequest | None, Body()] = None
) -> ReloadResponse | JSONResponse:
    """Load a model beside the current one, probe it, then swap; requests in flight finish on the old one.

    With several workers the model is published to all of them (serving/cluster.py): the answer
    comes once every live worker serves it, or with 504 after ``reload_timeout``.
    """
    uri = (body.model if body else None) or store.uri
    try:
        if cluster is None:
            return _answer(*await run_in_threadpool(store.load, uri))
        published = await run_in_threadpool(cluster.reload, uri)
    except ModelLoadError as error:
        current = store.current
        kept = "no model is loaded" if current is None else f"still serving version {current.info.version}"
        raise HTTPException(status.HTTP_409_CONFLICT, f"reload failed: {error}; {kept}") from None
    response = _answer(published.old, published.new)
    response.generation = published.target.generation
    response.workers = [_status(worker) for worker in published.workers]
    if not published.lagging:
        return response
    lagging = "; ".join(
        f"pid {w.pid} serves version {w.version} (generation {w.generation})" + (f", its last load failed: {w.error}" if w.error else "")
        for w in published.lagging
    )  # fmt: skip
    detail = (f"version {response.new_version} is published as generation {response.generation}, but "
              f"{len(published.lagging)} of {len(published.workers)} workers did not serve it within "
              f"{cluster.reload_timeout:g} s: {lagging}; they go on loading it")  # fmt: skip
    content = {"detail": detail, **response.model_dump(), "lagging": [_status(w).model_dump() for w in published.lagging]}
    return JSONResponse(status_code=status.HTTP_504_GATEWAY_TIMEOUT, content=content)


def _answer(old: ServedModel | None, new: ServedModel) -> ReloadResponse:
    old_version = None if old is None else old.info.version
    return ReloadResponse(old_version=old_version, new_version=new.info.version, model=new.info.source, loaded_at=new.info.loaded_at)


def _status(worker: WorkerState) -> WorkerStatus:
    return WorkerStatus(pid=worker.pid, generation=worker.generation, version=worker.version, error=worker.error)
