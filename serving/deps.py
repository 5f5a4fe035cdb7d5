"""Dependencies, as ``Annotated`` aliases: the settings, the model store, the current model, admin auth.

All are ``async def``: FastAPI runs a plain ``def`` dependency in the thread pool, a thread
hop per request for what is an attribute read. For the same reason the settings are read
from ``app.state`` (``create_app`` puts there the ones it was given, else the cached
``get_settings()``), so a test passes its own to ``create_app``.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, status

from serving.cluster import Cluster
from serving.config import Settings
from serving.middleware import request_info
from serving.model_store import ModelStore
from serving.served_model import ServedModel


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> ModelStore:
    return request.app.state.store


async def get_cluster(request: Request) -> Cluster | None:
    """The workers' shared state when there are several (``wdrec-serve --workers N``), else None."""
    return request.app.state.cluster


async def get_model(request: Request) -> ServedModel:
    """The current model, taken once: the request keeps this object even if a reload swaps it."""
    model = request.app.state.store.current
    if model is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no model loaded")
    info = request_info(request.scope)
    if info is not None:
        info.model_version = model.info.version
    return model


Scoring = Callable[[Callable[[], Any]], Awaitable[Any]]


async def get_scoring(request: Request, model: Annotated[ServedModel, Depends(get_model)]) -> Scoring:
    """How this request's scoring runs: on the event loop when the model is quick (under
    ``inline_score_ms``), else on the app's scoring threads, so that a slow model leaves the
    loop free for health checks and parsing. A thread hop costs about 0.5 ms (measured)."""
    if model.info.request_ms < request.app.state.settings.inline_score_ms:

        async def inline(work: Callable[[], Any]) -> Any:
            return work()

        return inline
    executor = request.app.state.score_executor

    async def threaded(work: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, work)

    return threaded


async def require_admin(
    settings: Annotated[Settings, Depends(get_app_settings)],
    authorization: Annotated[str | None, Header(description="Bearer <WDREC_ADMIN_TOKEN>")] = None,
) -> None:
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin endpoints are disabled: the server has no WDREC_ADMIN_TOKEN")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "Authorization: Bearer <token> required", headers={"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(token.strip().encode(), settings.admin_token.get_secret_value().encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong admin token")


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
ClusterDep = Annotated[Cluster | None, Depends(get_cluster)]
ModelDep = Annotated[ServedModel, Depends(get_model)]
ScoringDep = Annotated[Scoring, Depends(get_scoring)]
AdminDep = Depends(require_admin)
