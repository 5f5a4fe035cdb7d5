"""The demo page: ``GET /`` and its files under ``/static`` (serving/static, shipped in the package).

Plain HTML, CSS and JavaScript, no build step and nothing fetched from elsewhere: the page
talks only to the public API (``/v1/...``), with paths relative to its own address, so it
also works behind a proxy that serves the app under a sub-path.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

STATIC = Path(str(files("serving") / "static"))
# The page's own script, style and images only: no inline code, nothing from another origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag): a new version's page is seen at once
}


_files = StaticFiles(directory=STATIC)  # safe paths, content types, ETag and 304s
router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False, response_class=FileResponse)
async def page() -> FileResponse:
    """The demo page: pick a user, see the top-K with explanations, similar items, the model."""
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


# A route rather than a mount, so that the metrics count these requests under one route label.
@router.get("/static/{path:path}", include_in_schema=False)
async def static(path: str, request: Request) -> Response:
    response = await _files.get_response(path, request.scope)
    response.headers.update(PAGE_HEADERS)
    return response
