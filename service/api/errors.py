"""Errors in the OpenAI shape: exception types raised by the service and the handlers that render them.

A client's mistake gets a 4xx with a message that explains it; a failure of ours gets a 5xx with
a generic message (details go to the log, with the trace id, never to the client).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.protocol import ErrorDetail, ErrorResponse
from service.observability.metrics import CoreFunction

logger = logging.getLogger(__name__)

GENERIC_SERVER_ERROR = "The server had an error while processing your request. Please retry."
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]|\x1b\[[0-9;]*[A-Za-z]")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def sanitize(text: str, limit: int = 200) -> str:
    """User-controlled text made safe to echo or log: no control characters or ANSI escapes, bounded."""
    cleaned = _UNSAFE.sub("?", text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class OpenAIError(HTTPException):
    """An HTTP error rendered as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.message = message
        self.type = type or _TYPE_BY_STATUS.get(status_code, "server_error")
        self.param = param
        self.code = code

    def body(self) -> ErrorResponse:
        return ErrorResponse(
            error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        )


class CoreFunctionError(OpenAIError):
    """A 500 raised by one of the four core functions; `function` labels `autogen_errors_total`."""

    def __init__(self, function: CoreFunction, message: str = GENERIC_SERVER_ERROR) -> None:
        super().__init__(500, message, type="server_error", code="internal_error")
        self.function: CoreFunction = function


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model '{sanitize(model, 128)}' does not exist. GET /v1/models lists the served models.",
        param="model",
        code="model_not_found",
    )


def error_response(exc: OpenAIError) -> JSONResponse:
    return JSONResponse(exc.body().model_dump(), status_code=exc.status_code, headers=exc.headers)


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


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, FastAPI's own included, in the OpenAI shape."""

    async def on_openai_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OpenAIError)
        if isinstance(exc, CoreFunctionError):
            metrics = getattr(request.app.state, "metrics", None)
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
        return error_response(OpenAIError(status, message, headers=headers))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(exc)
        return error_response(OpenAIError(400, message, param=param, code="invalid_request"))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.errors.labels("unhandled").inc()
        return error_response(OpenAIError(500, GENERIC_SERVER_ERROR, code="internal_error"))

    app.add_exception_handler(OpenAIError, on_openai_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def error_event(exc: OpenAIError) -> dict[str, Any]:
    """The SSE form of an error sent after the stream has started."""
    return exc.body().model_dump()
