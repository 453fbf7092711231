"""Run locks held as leases: a short time to live, renewed while the turn runs.

A conversation (or a continued response) runs one turn at a time. Its lock is a lease of `ttl_s`
(`LOCK_LEASE_S`), renewed every third of that while the turn runs, so a worker that dies (SIGKILL,
OOM, a lost node) frees it within one `ttl_s`, not after the longest a turn may take. The store's
own primitives do the work: `SET NX PX` and compare-and-`PEXPIRE` in Redis, one conditional `UPDATE`
in SQLite.

A renewal that finds the lease gone (it expired while the store stalled, and another turn took it)
marks the lease `lost`: that turn must not store its result. A release that cannot reach the store
is retried in the background until the lease would have expired anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from service.state.store import StateStore, StateStoreUnavailable

logger = logging.getLogger(__name__)

# One store call of a lease (take, renew, release) waits at most this long.
CALL_TIMEOUT_S = 5.0
RETRY_INTERVAL_S = 0.5


class Lease:
    """One held run lock: `take` it, check `lost` before storing, `release` it once."""

    def __init__(self, store: StateStore, key: str, token: str, ttl_s: float) -> None:
        self.store = store
        self.key = key
        self.token = token
        self.ttl_s = ttl_s
        self.lost = False
        self._held_until = time.monotonic() + ttl_s
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def take(cls, store: StateStore, key: str, ttl_s: float) -> Lease | None:
        """The lease of `key`, renewed from now on; None while someone else holds it.

        Raises:
            StateStoreUnavailable: the store cannot be reached.
        """
        token = secrets.token_hex(16)
        if not await store.try_lock(key, token, ttl_s):
            return None
        lease = cls(store, key, token, ttl_s)
        lease._task = store.keep(asyncio.create_task(lease._renew(), name=f"lease:{key}"))
        return lease

    async def _renew(self) -> None:
        interval = self.ttl_s / 3
        while True:
            await asyncio.sleep(interval)
            asked = time.monotonic()
            try:
                async with asyncio.timeout(min(interval, CALL_TIMEOUT_S)):
                    held = await self.store.renew_lock(self.key, self.token, self.ttl_s)
            except (StateStoreUnavailable, TimeoutError):
                continue  # a stalled store: try again; the lease expires if it never answers
            if not held:
                self.lost = True
                logger.warning("run lock lost: it expired while its turn ran", extra={"lock": self.key})
                return
            self._held_until = asked + self.ttl_s

    async def release(self) -> None:
        """Stop renewing and free the lock (a store that cannot be reached: retried in the
        background until the lease would have expired)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.lost:
            return
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await self.store.unlock(self.key, self.token)
        except (StateStoreUnavailable, TimeoutError):
            self.store.keep(asyncio.create_task(self._unlock_later(), name=f"unlock:{self.key}"))

    async def _unlock_later(self) -> None:
        while time.monotonic() < self._held_until:
            await asyncio.sleep(RETRY_INTERVAL_S)
            with contextlib.suppress(StateStoreUnavailable, TimeoutError):
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    await self.store.unlock(self.key, self.token)
                return
