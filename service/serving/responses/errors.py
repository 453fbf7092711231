"""The errors of stored objects and turns: 404 (never revealing whose or whether), 409, 413, 503."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from service.contract.errors import OpenAIError, sanitize
from service.state import StateStoreUnavailable, StateTooLarge


def _kept_for(ttl_s: int) -> str:
    for unit, seconds in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if ttl_s >= seconds and ttl_s % seconds == 0:
            return f"{ttl_s // seconds} {unit}"
    return f"{ttl_s} seconds"


def not_found(kind: str, object_id: str, ttl_s: int, param: str | None = None) -> OpenAIError:
    """The same 404 for a missing, deleted, expired or another key's object (nothing is revealed)."""
    kept = f"{kind}s are kept for {_kept_for(ttl_s)}"
    if kind == "conversation":
        kept += " after their last change"
    return OpenAIError(
        404,
        f"No {kind} '{sanitize(object_id, 80)}' is stored for this API key: it never existed, was "
        f"deleted, or expired ({kept}).",
        param=param,
        code=f"{kind}_not_found",
    )


def store_unavailable() -> OpenAIError:
    return OpenAIError(
        503,
        "The state store is unavailable. Retry shortly.",
        code="state_store_unavailable",
        headers={"Retry-After": "1"},
    )


def busy(kind: str) -> OpenAIError:
    what = "turn of this conversation" if kind == "conversation" else "continuation of this response"
    return OpenAIError(
        409,
        f"Another {what} is running: one turn at a time. Retry when it has finished.",
        param="conversation" if kind == "conversation" else "previous_response_id",
        code="conversation_busy",
    )


def state_too_large(error: StateTooLarge) -> OpenAIError:
    return OpenAIError(
        413,
        f"The team's state after this turn is {error.size} bytes, above the limit of {error.limit} "
        "(STATE_MAX_BYTES): nothing was stored. Start a new conversation.",
        code="state_too_large",
    )


def owns(record_owner: str, owner: str) -> bool:
    return secrets.compare_digest(record_owner, owner)


@contextlib.contextmanager
def unavailable_as_503() -> Iterator[None]:
    """A state store that cannot be reached is the caller's 503 `state_store_unavailable`."""
    try:
        yield
    except StateStoreUnavailable:
        raise store_unavailable() from None


def state_incompatible() -> OpenAIError:
    return OpenAIError(
        409,
        "The saved state cannot be loaded into this model's team (its definition changed, or the "
        "stored state is damaged): start a new conversation.",
        code="state_incompatible",
    )
