"""Errors of the request path: the core functions' 500, and run failures as HTTP errors.

One mapping from how a run ended to what the client is told and how the request is counted, used by
every API and both modes.
"""

from __future__ import annotations

from service.contract.errors import (
    GENERIC_SERVER_ERROR,
    OpenAIError,
    deadline_passed,
    upstream_failed,
    upstream_timed_out,
)
from service.observability.metrics import CoreFunction, Outcome
from service.runs.events import FailureKind, RunEnded, RunEndReason


class CoreFunctionError(OpenAIError):
    """A 500 raised by one of the four core functions; `function` labels `autogen_errors_total`."""

    def __init__(self, function: CoreFunction, message: str = GENERIC_SERVER_ERROR) -> None:
        super().__init__(500, message, type="server_error", code="internal_error")
        self.function: CoreFunction = function


def run_failure(ended: RunEnded) -> tuple[OpenAIError, Outcome] | None:
    """The client-facing error of a run that did not produce an answer (None when it did).

    No upstream or internal details reach the client: they are in the log, with the trace id.
    """
    if ended.reason is RunEndReason.DEADLINE:
        return deadline_passed(), "timeout"
    if ended.reason is RunEndReason.CANCELLED:  # the server stopped it (shutdown): retry elsewhere
        return OpenAIError(503, "The run was cancelled before it finished.", code="cancelled"), "cancelled"
    if ended.reason is not RunEndReason.FAILED:
        return None
    if ended.failure is FailureKind.UPSTREAM_TIMEOUT:
        return upstream_timed_out(), "timeout"
    if ended.failure is FailureKind.UPSTREAM_ERROR:
        return upstream_failed(), "server_error"
    return CoreFunctionError("serve_autogen"), "server_error"
