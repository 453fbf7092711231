"""Backpressure: a bounded number of team runs per worker; beyond it a request is refused at once."""

from __future__ import annotations

from prometheus_client import Gauge


class WorkflowSlots:
    """A non-blocking counting semaphore: `try_acquire` never waits, so nothing queues without bound."""

    def __init__(self, limit: int, gauge: Gauge | None = None) -> None:
        self.limit = limit
        self.in_use = 0
        self._gauge = gauge

    def try_acquire(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        if self._gauge is not None:
            self._gauge.inc()
        return True

    def release(self) -> None:
        if self.in_use > 0:
            self.in_use -= 1
            if self._gauge is not None:
                self._gauge.dec()
