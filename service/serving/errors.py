"""Errors of the request path: the core functions' 500, and run failures as HTTP errors.

One mapping from how a run ended to what the client is told and how the request is counted, used by
every API and both modes.
"""

from __future__ import annotations

import asyncio

from service.contract.errors import (
    GENERIC_SERVER_ERROR,
    OpenAIError,
    deadline_passed,
    upstream_failed,
    upstream_timed_out,
)
from service.observability.metrics import CoreFunction, Outcome
from service.runs.events import FailureKind, RunEnded, RunEndReason


class ClientGone(Exception):
    """The client went away before the answer (or a stream's first event) was ready."""


class CoreFunctionError(OpenAIError):
    """A 500 raised by one of the four core functions; `function` labels `autogen_errors_total`."""

    def __init__(self, function: CoreFunction, message: str = GENERIC_SERVER_ERROR) -> None:
        super().__init__(500, message, type="server_error", code="internal_error")
        self.function: CoreFunction = function


# Errors whose outcome is not told by their status alone.
_OUTCOME_BY_CODE: dict[str | None, Outcome] = {
    "timeout": "timeout",
    "upstream_timeout": "timeout",
    "cancelled": "cancelled",
    "overloaded": "client_error",  # the request was refused before any work
}


def outcome_of(error: BaseException) -> Outcome:
    """How a request that ended with `error` is counted (`autogen_requests_total{outcome}`)."""
    if isinstance(error, (ClientGone, asyncio.CancelledError)):
        return "cancelled"
    if isinstance(error, OpenAIError):
        known = _OUTCOME_BY_CODE.get(error.code)
        if known is not None:
            return known
        return "client_error" if error.status_code < 500 else "server_error"
    return "server_error"


def run_error(ended: RunEnded) -> OpenAIError | None:
    """The client-facing error of a run that did not produce an answer (None when it did).

    No upstream or internal details reach the client: they are in the log, with the trace id.
    """
    if ended.reason is RunEndReason.DEADLINE:
        return deadline_passed()
    if ended.reason is RunEndReason.CANCELLED:  # the server stopped it (shutdown): retry elsewhere
        return OpenAIError(503, "The run was cancelled before it finished.", code="cancelled")
    if ended.reason is not RunEndReason.FAILED:
        return None
    if ended.failure is FailureKind.UPSTREAM_TIMEOUT:
        return upstream_timed_out()
    if ended.failure is FailureKind.UPSTREAM_ERROR:
        return upstream_failed()
    return CoreFunctionError("serve_autogen")


def run_failure(ended: RunEnded) -> tuple[OpenAIError, Outcome] | None:
    """`run_error` with the outcome the request is counted with."""
    error = run_error(ended)
    return None if error is None else (error, outcome_of(error))
