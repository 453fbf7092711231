"""FastAPI's error handling in the OpenAI shape: every error, FastAPI's own included, is rendered as
`{"error": {"message", "type", "param", "code"}}` (the contract is `service.contract.errors`)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from service.app_state import find
from service.contract.errors import GENERIC_SERVER_ERROR, OpenAIError, sanitize
from service.observability.metrics import METRICS
from service.protection.responses import error_response
from service.serving.errors import CoreFunctionError

logger = logging.getLogger(__name__)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request body.", None
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    message = sanitize(str(first.get("msg", "invalid value")), 300)
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    prefix = f"{param}: " if param else ""
    return f"Invalid request: {prefix}{message}{more}", param


def _allowed_methods(request: Request) -> str:
    """Every method of every route of this path: Starlette's 405 names only the first route's, and a
    path may have one route per method (`GET` and `DELETE /v1/responses/{id}`)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(request.url.path):
            methods |= route.methods
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, FastAPI's own included, in the OpenAI shape."""

    async def on_openai_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OpenAIError)
        if isinstance(exc, CoreFunctionError):
            metrics = find(request.app, METRICS)
            if metrics is not None:
                metrics.errors.labels(exc.function).inc()
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        message = "Not found." if status == 404 else sanitize(str(exc.detail), 300)
        if status >= 500:
            message = GENERIC_SERVER_ERROR
        headers = getattr(exc, "headers", None)
        if status == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return error_response(OpenAIError(status, message, headers=headers))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(exc)
        return error_response(OpenAIError(400, message, param=param, code="invalid_request"))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        metrics = find(request.app, METRICS)
        if metrics is not None:
            metrics.errors.labels("unhandled").inc()
        return error_response(OpenAIError(500, GENERIC_SERVER_ERROR, code="internal_error"))

    app.add_exception_handler(OpenAIError, on_openai_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
