"""Stored responses, conversations and saved team states for the Responses API (`STATE_STORE_URI`).

`StateStoreHandle` opens the configured store on first use (a deployment that serves only chat
completions never creates a file or a connection), once per worker, and closes it at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from service.app_state import StateKey
from service.config import Settings
from service.observability.redact import redact_uri
from service.state.store import (
    ANONYMOUS_OWNER,
    ConversationRecord,
    ConversationRun,
    ConversationTurn,
    PendingInput,
    ResponseRecord,
    StateCorrupt,
    StateStore,
    StateStoreUnavailable,
    StateTooLarge,
    Turn,
    decode_state,
    encode_state,
)

logger = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0


async def open_state_store(uri: str, ttl_s: int) -> StateStore:
    """The store named by `uri`: `sqlite:///<path>` or `redis://...` (`rediss://`, `unix://`)."""
    if uri.startswith("sqlite:///"):
        from service.state.sqlite import SqliteStateStore

        return await SqliteStateStore.open(uri, ttl_s)
    from service.state.redis import RedisStateStore

    return await RedisStateStore.open(uri, ttl_s)


class StateStoreHandle:
    """The worker's state store, opened on first use; a failed open is retried by the next request."""

    def __init__(self, settings: Settings) -> None:
        self.uri = settings.state_store
        self.ttl_s = settings.state_ttl_s
        # Called once per failed store operation, opening included (the app counts them).
        self.on_error: Callable[[], None] | None = None
        self._store: StateStore | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> StateStore:
        """The open store.

        Raises:
            StateStoreUnavailable: it cannot be opened (logged; the caller answers 503).
        """
        store = self._store
        if store is not None:
            return store
        async with self._lock:
            if self._store is None:
                try:
                    async with asyncio.timeout(OPEN_TIMEOUT_S):
                        self._store = await open_state_store(self.uri, self.ttl_s)
                except StateStoreUnavailable:
                    if self.on_error is not None:
                        self.on_error()
                    raise
                except (OSError, TimeoutError) as exc:
                    if self.on_error is not None:
                        self.on_error()
                    logger.error(
                        "state store cannot be opened",
                        extra={"store": redact_uri(self.uri), "reason": f"{type(exc).__name__}: {exc}"},
                    )
                    raise StateStoreUnavailable(str(exc)) from exc
                self._store.on_error = self.on_error
                logger.info(
                    "state store opened",
                    extra={
                        "store": redact_uri(self.uri),
                        "backend": self._store.backend,
                        "ttl_s": self.ttl_s,
                    },
                )
            return self._store

    async def aclose(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()


__all__ = [
    "ANONYMOUS_OWNER",
    "ConversationRecord",
    "ConversationRun",
    "ConversationTurn",
    "PendingInput",
    "ResponseRecord",
    "StateCorrupt",
    "StateStore",
    "StateStoreHandle",
    "StateStoreUnavailable",
    "StateTooLarge",
    "Turn",
    "decode_state",
    "encode_state",
    "open_state_store",
]


STATE_STORE: StateKey[StateStoreHandle] = StateKey("state_store", StateStoreHandle)
