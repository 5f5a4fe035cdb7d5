from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests and latency per route and status, model version, reloads."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
