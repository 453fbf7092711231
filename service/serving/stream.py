"""A run behind a streaming response: started as a task, read through a bounded queue, released once.

The HTTP status of a stream is committed only when the run has something to say: the first event
after `RunStarted` (or `STREAM_KEEPALIVE_S`, whichever comes first). A run that fails before that
(the first model call gets an upstream 502, the deadline passes) is answered with its real status
(502/504/500) instead of a 200 followed by an error event.
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from autogen_core import CancellationToken
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service.observability.metrics import RequestObserver, ServiceMetrics
from service.protection.capacity import WorkflowSlots
from service.runs.events import ModelUsage, RunEnded, RunEvent, RunStarted
from service.serving.errors import ClientGone

# How long a stream's first word is awaited before the client's disconnect is watched as well.
WATCH_AFTER_S = 1.0
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
PRODUCER_STOP_TIMEOUT_S = 5.0
# Events that say nothing yet: the stream's status waits for the next one.
_SILENT = (RunStarted, ModelUsage)


@dataclass
class StreamRun:
    """The resources of one streaming run, released exactly once when the response closes."""

    observer: RequestObserver
    slots: WorkflowSlots
    metrics: ServiceMetrics
    token: CancellationToken
    producer: asyncio.Task[RunEnded] | None = None
    closed: bool = field(default=False)

    def start(self, run: Awaitable[RunEnded], name: str) -> None:
        self.metrics.active_streams.inc()
        self.producer = asyncio.ensure_future(run)
        self.producer.set_name(name)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        producer = self.producer
        if producer is not None and not producer.done():
            self.token.cancel()  # stops the agents' model calls at once
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(producer), PRODUCER_STOP_TIMEOUT_S)
        elif producer is not None and not producer.cancelled():
            producer.exception()  # retrieved: the run reports its own failures as events
        self.observer.finish("cancelled")  # no-op when the stream already recorded its outcome
        if producer is not None:
            self.metrics.active_streams.dec()
        self.slots.release()


async def _first_word(queue: asyncio.Queue[RunEvent], events: list[RunEvent]) -> None:
    while True:
        event = await queue.get()
        events.append(event)
        if not isinstance(event, _SILENT):
            return


async def first_events(
    queue: asyncio.Queue[RunEvent],
    wait_s: float,
    client_gone: Callable[[], Awaitable[None]] | None = None,
) -> list[RunEvent]:
    """The events up to and including the first that says something, waiting at most `wait_s`.

    A run usually says something within milliseconds; only when it takes longer than
    `WATCH_AFTER_S` is the client's disconnect watched too (a task more per request otherwise).

    Raises:
        ClientGone: the client went away first.
    """
    events: list[RunEvent] = []
    try:
        async with asyncio.timeout(min(wait_s, WATCH_AFTER_S)):
            await _first_word(queue, events)
            return events
    except TimeoutError:
        if client_gone is None or wait_s <= WATCH_AFTER_S:
            return events
    word = asyncio.ensure_future(_first_word(queue, events))
    gone = asyncio.ensure_future(client_gone())
    try:
        done, _ = await asyncio.wait(
            {word, gone}, timeout=wait_s - WATCH_AFTER_S, return_when=FIRST_COMPLETED
        )
    finally:
        for task in (word, gone):
            task.cancel()
    if gone in done and word not in done:
        raise ClientGone
    return events


class AgentStreamingResponse(StreamingResponse):
    """A StreamingResponse that always releases its run when the response ends, however it ends.

    A client disconnect cancels the response task; whether that lands inside the body iterator or
    in `send`, this `finally` cancels the run (AgentChat `CancellationToken` + producer task).
    """

    def __init__(
        self,
        content: AsyncIterator[str],
        on_close: Callable[[], Awaitable[None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={**STREAM_HEADERS, **(headers or {})}
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            iterator = self.body_iterator
            try:
                if hasattr(iterator, "aclose"):
                    await iterator.aclose()
            finally:
                await self._on_close()
