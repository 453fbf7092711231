"""Why a run failed, as far as a client may know: the LLM behind an agent, or everything else.

The model clients raise `UpstreamModelError` / `UpstreamModelTimeout` for failures of the LLM (HTTP
errors, broken or oversized streams, timeouts). Inside a team, AgentChat re-raises an agent's
exception as `RuntimeError("<TypeName>: <message>...")` (its group chat serializes errors across the
runtime), so failures are classified by type, or by the type name that message starts with.
"""

from __future__ import annotations

from service.runs.events import FailureKind


class UpstreamModelError(RuntimeError):
    """The LLM behind an agent failed to answer (an HTTP error, a broken or malformed stream)."""


class UpstreamModelTimeout(UpstreamModelError):
    """The LLM behind an agent did not answer in time."""


_KINDS_BY_NAME = {
    UpstreamModelTimeout.__name__: FailureKind.UPSTREAM_TIMEOUT,
    UpstreamModelError.__name__: FailureKind.UPSTREAM_ERROR,
}


def failure_kind(exc: BaseException) -> FailureKind:
    """The client-facing kind of a run's failure (never its details)."""
    if isinstance(exc, UpstreamModelTimeout):
        return FailureKind.UPSTREAM_TIMEOUT
    if isinstance(exc, UpstreamModelError):
        return FailureKind.UPSTREAM_ERROR
    if type(exc) is RuntimeError:
        return _KINDS_BY_NAME.get(str(exc).split(":", 1)[0].strip(), FailureKind.INTERNAL)
    return FailureKind.INTERNAL
