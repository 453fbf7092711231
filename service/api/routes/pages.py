"""Pages for people: the playground (`/`, `/playground`) and the API docs (`/docs`, `/redoc`).

Nothing a page loads comes from another host, so they work on a machine with no internet: the
playground's HTML, CSS and JavaScript are files of this package (`service/static`, no build step),
and Swagger UI and ReDoc are the builds shipped by the pinned `fastapi-offline` package (served
from `/static/vendor`). Pages carry no data and need no API key; the playground asks for a key and
calls the public API with it. Their Content-Security-Policy is set in `protection/headers.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
VENDOR_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
STATIC_URL = "/static"
VENDOR_URL = "/static/vendor"
PLAYGROUND_PATHS = ("/", "/playground")
DOCS_PATHS = ("/docs", "/redoc")

router = APIRouter(include_in_schema=False)


class _Assets(StaticFiles):
    """Static files a browser may keep but must revalidate (ETag), so an upgrade shows at once."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = "no-cache"
        return response


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8")


@router.api_route("/", methods=["GET", "HEAD"])
@router.api_route("/playground", methods=["GET", "HEAD"])
async def playground() -> FileResponse:
    return _page("playground.html")


@router.api_route("/docs", methods=["GET", "HEAD"])
async def swagger_ui() -> FileResponse:
    return _page("swagger.html")


@router.api_route("/redoc", methods=["GET", "HEAD"])
async def redoc() -> FileResponse:
    return _page("redoc.html")


def install_pages(app: FastAPI) -> None:
    """The page routes and the two static folders (the vendor one first: it is inside `/static`)."""
    app.include_router(router)
    app.mount(VENDOR_URL, _Assets(directory=VENDOR_DIR), name="vendor")
    app.mount(STATIC_URL, _Assets(directory=STATIC_DIR), name="static")
