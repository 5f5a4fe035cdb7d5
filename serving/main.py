"""The app factory: ``create_app()`` builds the FastAPI app; the model loads in ``lifespan``.

``uvicorn serving.main:create_app --factory`` (what ``wdrec-serve`` runs) calls it with no
arguments in each worker, so everything comes from the settings (``WDREC_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import torch
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from serving import errors
from serving.cluster import Cluster
from serving.config import Settings, get_settings
from serving.loader import ModelLoadError
from serving.metrics import Metrics
from serving.middleware import BodyGuard, RequestContext
from serving.model_store import ModelStore, is_alias
from serving.routers import admin, health, items, metrics, model, page, recommendations, users

log = logging.getLogger("wdrec.serving")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    store: ModelStore = app.state.store
    cluster: Cluster | None = app.state.cluster
    # torch's thread count is a per-thread setting (OpenMP): a thread that never set it uses
    # every core. Scoring runs here, on the event loop (quick models), or on threads of its own.
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.torch_threads)
    app.state.score_executor = ThreadPoolExecutor(
        settings.score_threads, "wdrec-score", initializer=torch.set_num_threads, initargs=(settings.torch_threads,)
    )
    tasks: list[asyncio.Task[None]] = []
    try:
        if cluster is not None:
            await run_in_threadpool(cluster.start)  # the published model, not necessarily the start URI
            tasks.append(asyncio.create_task(cluster.watch()))
        elif store.uri:
            await run_in_threadpool(store.load)  # ModelLoadError: startup fails, naming the file
        else:
            log.warning("no model configured (WDREC_MODEL): not ready until POST /admin/reload loads one")
        if settings.poll_seconds > 0 and is_alias(store.uri):
            tasks.append(asyncio.create_task(_poll(store, cluster, settings.poll_seconds)))
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if cluster is not None:
            cluster.stop()
        app.state.score_executor.shutdown(wait=False, cancel_futures=True)
        torch.set_num_threads(threads)


async def _poll(store: ModelStore, cluster: Cluster | None, seconds: float) -> None:
    """Reload when the registry alias (models:/name@alias) moves to another version.

    With several workers the new version is published (serving/cluster.py), so that they all
    follow the worker whose poll saw the move first, instead of each at its own time.
    A version that failed to load is not retried until the alias moves again.
    """
    failed = None
    while True:
        await asyncio.sleep(seconds)
        try:
            version = await run_in_threadpool(store.registry_version)
            current = store.current
            if version is not None and version != failed and (current is None or current.info.version != version):
                failed = version
                if cluster is None:
                    await run_in_threadpool(store.load)
                else:
                    await run_in_threadpool(cluster.follow_alias, version)
                failed = None
        except ModelLoadError as error:
            log.error("alias poll: version %s failed to load, old model kept: %s", failed, error)
        except Exception as error:  # the registry may be briefly unreachable: try again next time
            log.warning("alias poll failed: %s: %s", type(error).__name__, error)


def create_app(model_uri: str | None = None, settings: Settings | None = None) -> FastAPI:
    """The service for ``model_uri`` (a bundle path or models:/ URI; default ``settings.model``)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="wdrec",
        summary="Wide&Deep recommendations over HTTP",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = ModelStore(
        model_uri or settings.model, settings.fast_path, settings.two_stage_candidates
    )
    app.state.cluster = None if settings.state_dir is None else Cluster(
        settings.state_dir, app.state.store, settings.sync_seconds, settings.reload_timeout
    )  # several workers (wdrec-serve --workers N): they follow one published model
    app.state.metrics = Metrics(app.state.store, app.state.cluster)
    routers = (health.router, model.router, recommendations.router, users.router, items.router, admin.router, metrics.router,
               page.router)  # fmt: skip
    for router in routers:
        app.include_router(router)
    errors.install(app)
    paths = {route.path for router in routers for route in router.routes}  # metric labels: known paths only
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=app.state.metrics, routes=paths)  # outermost: sees every response
    return app
