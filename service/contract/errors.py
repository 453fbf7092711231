"""The OpenAI error contract: the body `{"error": {"message", "type", "param", "code"}}` and the
exception that carries it through the service.

A client's mistake gets a 4xx with a message that explains it; a failure of ours gets a 5xx with a
generic message (details go to the log, with the trace id, never to the client).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel

GENERIC_SERVER_ERROR = "The server had an error while processing your request. Please retry."
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]|\x1b\[[0-9;]*[A-Za-z]")

TYPE_BY_STATUS = {
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
    431: "invalid_request_error",
    502: "upstream_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def sanitize(text: str, limit: int = 200) -> str:
    """User-controlled text made safe to echo or log: no control characters or ANSI escapes, bounded."""
    cleaned = _UNSAFE.sub("?", text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


class OpenAIError(Exception):
    """An error with its HTTP status, rendered as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type or TYPE_BY_STATUS.get(status_code, "server_error")
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> ErrorResponse:
        return ErrorResponse(
            error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        )


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model '{sanitize(model, 128)}' does not exist. GET /v1/models lists the served models.",
        param="model",
        code="model_not_found",
    )


def upstream_failed() -> OpenAIError:
    return OpenAIError(502, "The upstream model failed to answer.", code="upstream_error")


def upstream_timed_out() -> OpenAIError:
    return OpenAIError(504, "The upstream model did not answer in time.", code="upstream_timeout")


def deadline_passed() -> OpenAIError:
    return OpenAIError(504, "The workflow did not finish in time.", code="timeout")


def overloaded() -> OpenAIError:
    return OpenAIError(
        503,
        "The server is at its limit of concurrent workflows. Retry shortly.",
        code="overloaded",
        headers={"Retry-After": "1"},
    )
