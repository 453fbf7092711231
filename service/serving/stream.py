"""The stream of a run: its first events (before the status is committed), its response, its loop.

The HTTP status of a stream is committed only when the run has something to say: the first event
after `RunStarted` (or `STREAM_KEEPALIVE_S`, whichever comes first): `first_events`. A run that fails
before that (the first model call gets an upstream 502, the deadline passes) is answered with its
real status (502/504/500) instead of a 200 followed by an error event.

`pump_events` is the stream's writer loop, the same for every API: the wire format is a
`StreamWriter` (chat-completion chunks, Responses events). At the run's end the request is settled
(`RequestRun.settle`: outcome recorded, slot and locks released) before the last bytes are written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service.contract.errors import OpenAIError, deadline_passed
from service.contract.sse import SSE_KEEPALIVE
from service.observability.metrics import CoreFunction, Outcome, RequestObserver
from service.runs.events import ModelUsage, RunEnded, RunEvent, RunStarted
from service.serving.errors import ClientGone, CoreFunctionError, outcome_of, run_error
from service.serving.request_run import RequestRun

logger = logging.getLogger("service.serving.stream")

# How long a stream's first word is awaited before the client's disconnect is watched as well.
WATCH_AFTER_S = 1.0
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
# A stream may outlive WORKFLOW_TIMEOUT_S by this much: the run's last events after its deadline.
STREAM_MARGIN_S = 5.0
MAX_EVENTS_PER_WRITE = 64
# Events that say nothing yet: the stream's status waits for the next one.
_SILENT = (RunStarted, ModelUsage)


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


class StreamWriter(Protocol):
    """A wire format for `pump_events`: SSE events of the run's events, of its end, of a failure."""

    def feed(self, event: RunEvent) -> list[str]:
        """The SSE events of one run event (often none)."""

    async def end(self, ended: RunEnded) -> tuple[list[str], Outcome]:
        """The closing SSE events of a run that ended with an answer, and the request's outcome."""

    def error(self, error: OpenAIError) -> list[str]:
        """The last SSE events of a stream that failed after its first byte."""


async def pump_events(
    queue: asyncio.Queue[RunEvent],
    writer: StreamWriter,
    *,
    first: Sequence[RunEvent] = (),
    run: RequestRun | None = None,
    keepalive_s: float = 15.0,
    deadline_s: float | None = None,
    flush_interval_s: float = 0.0,
    preamble: int = 1,
    function: CoreFunction = "generate_streaming_response",
    model: str = "",
) -> AsyncIterator[str]:
    """The SSE writes of a running team's events, read from a bounded queue (after `first`).

    Writes what `writer` makes of each event; everything already queued leaves in one write (one
    send and one loop turn for many events when the client lags behind); after a write, events are
    gathered for up to `flush_interval_s` (the first output is written at once). `: ping` comments
    keep proxies from closing the connection while an agent thinks. A failure after the first byte
    is written by `writer.error` and ends the stream. `preamble`: how many writes come before the
    first content (time to first token is measured at the next one). `run` (the request's
    bookkeeping) is settled with the stream's outcome before its last write.

    Raises:
        Nothing to the caller once streaming: failures become the writer's error events (logged,
        and counted as `function` 500s unless they are a run's own failure).
    """
    observer: RequestObserver | None = run.observer if run is not None else None
    deadline = time.monotonic() + deadline_s if deadline_s else None
    last_write = 0.0
    output_sent = False
    written_total = 0
    pending = list(first)
    try:
        while True:
            if flush_interval_s and output_sent:
                # Gather what the team writes during the interval after the last write: one wake-up
                # per write while tokens flow, instead of one per token.
                hold = last_write + flush_interval_s - time.monotonic()
                if hold > 0:
                    await asyncio.sleep(hold)
            if pending:
                event = pending.pop(0)
            elif queue.empty():
                wait = keepalive_s if deadline is None else min(keepalive_s, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError
                try:
                    async with asyncio.timeout(wait):
                        event = await queue.get()
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    yield SSE_KEEPALIVE
                    continue
            else:
                event = queue.get_nowait()
            events: list[str] = []
            while True:
                if isinstance(event, RunEnded):
                    error = run_error(event)
                    outcome: Outcome
                    if error is None:
                        if run is not None:
                            await run.producer_done()  # the team is idle: its state is whole
                        closing, outcome = await writer.end(event)
                        events.extend(closing)
                    else:
                        outcome = outcome_of(error)
                        if isinstance(error, CoreFunctionError) and observer is not None:
                            observer.error(error.function)
                        events.extend(writer.error(error))
                    if run is not None:
                        run.observer.chunks(len(events))
                        await run.settle(outcome)
                    yield "".join(events)
                    return
                written = writer.feed(event)
                if written:
                    events.extend(written)
                if pending:
                    event = pending.pop(0)
                elif queue.empty() or len(events) >= MAX_EVENTS_PER_WRITE:
                    break
                else:
                    event = queue.get_nowait()
            if not events:
                continue
            written_total += len(events)
            if not output_sent and written_total > preamble:
                output_sent = True
                if observer is not None:
                    observer.first_content()
            if observer is not None:
                observer.chunks(len(events))
            yield "".join(events)
            last_write = time.monotonic()
    except TimeoutError:
        logger.warning("stream deadline passed", extra={"model": model})
        yield await _failed(writer, run, deadline_passed())
    except CoreFunctionError as exc:
        yield await _failed(writer, run, exc)
    except Exception:
        logger.exception("streaming failed", extra={"model": model})
        yield await _failed(writer, run, CoreFunctionError(function))


async def _failed(writer: StreamWriter, run: RequestRun | None, error: OpenAIError) -> str:
    """The last write of a stream that failed after its first byte; the request settled before it."""
    if run is not None:
        if isinstance(error, CoreFunctionError):
            run.observer.error(error.function)
        await run.settle(outcome_of(error))
    return "".join(writer.error(error))
