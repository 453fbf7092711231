"""One request's resources and bookkeeping, from admission to its end, settled exactly once.

What a served request holds: its metrics observer, a capacity slot, what its protocol holds (the
Responses API's run lock), and for a stream the running producer task. `settle(outcome)` is the one
place where a request's outcome is recorded and what it holds is released; every path ends there:
a whole answer, an error before the first byte, a stream's last event (settled before its final
bytes are written, so the slot is free by the time the client has the last byte), and the response's
close (a client that went away: `cancelled`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from autogen_core import CancellationToken

from service.observability.metrics import Outcome, RequestObserver, ServiceMetrics
from service.protection.capacity import WorkflowSlots
from service.runs.events import RunEnded

PRODUCER_STOP_TIMEOUT_S = 5.0
# At a run's end the team is given this long to return (its state is whole then) before the stream's
# last events are written.
PRODUCER_DONE_WAIT_S = 5.0


@dataclass
class RequestRun:
    """The resources of one request; `settle` and `close` are idempotent."""

    observer: RequestObserver
    slots: WorkflowSlots | None = None  # set while a capacity slot is held
    release: Callable[[], Awaitable[None]] | None = None  # the protocol's own resources
    token: CancellationToken = field(default_factory=CancellationToken)
    producer: asyncio.Task[RunEnded] | None = None
    metrics: ServiceMetrics | None = None  # set while the run counts as an active stream
    settled: bool = False
    closed: bool = False

    def start(self, run: Awaitable[RunEnded], name: str, metrics: ServiceMetrics) -> None:
        """Start the run of a stream as a task (counted as an active stream until `close`)."""
        metrics.active_streams.inc()
        self.metrics = metrics
        self.producer = asyncio.ensure_future(run)
        self.producer.set_name(name)

    async def producer_done(self) -> None:
        """Wait (bounded) for a run that sent its `RunEnded` to return."""
        producer = self.producer
        if producer is not None and not producer.done():
            await asyncio.wait({producer}, timeout=PRODUCER_DONE_WAIT_S)

    async def settle(self, outcome: Outcome) -> None:
        """Record the request's outcome and release what it holds (once; later calls do nothing)."""
        if self.settled:
            return
        self.settled = True
        release, self.release = self.release, None
        slots, self.slots = self.slots, None
        try:
            if release is not None:
                await release()
        finally:
            if slots is not None:
                slots.release()
            self.observer.finish(outcome)

    async def close(self, outcome: Outcome = "cancelled") -> None:
        """The response ended (or never started): stop a run still going, then settle as `outcome`
        (a request already settled keeps its outcome)."""
        if self.closed:
            return
        self.closed = True
        producer = self.producer
        try:
            if producer is not None and not producer.done():
                self.token.cancel()  # stops the agents' model calls at once
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(asyncio.shield(producer), PRODUCER_STOP_TIMEOUT_S)
            elif producer is not None and not producer.cancelled():
                producer.exception()  # retrieved: the run reports its own failures as events
        finally:
            try:
                await self.settle(outcome)
            finally:
                if self.metrics is not None:
                    self.metrics.active_streams.dec()
                    self.metrics = None
