"""An `OpenAIError` as an HTTP response (for guards that answer before any route runs)."""

from __future__ import annotations

from starlette.responses import JSONResponse

from service.contract.errors import OpenAIError


def error_response(exc: OpenAIError) -> JSONResponse:
    return JSONResponse(exc.body().model_dump(), status_code=exc.status_code, headers=exc.headers)
