"""The HTTP layer under the OpenAI-compatible model clients: bounded, and closed when a call ends.

autogen-ext's `OpenAIChatCompletionClient` opens a streaming response for every streamed model call
and never closes it when the call is abandoned (its chunk generator has no `finally`): a run
cancelled while its tokens wait for a slow client left the upstream stream open, unread, and the LLM
generating for nobody. The service therefore puts its own transport under each such client:

- every response opened during a model call is recorded, and `upstream_call()` closes them all
  when the call ends, however it ends (done, failed, cancelled, deadline);
- an event of a streamed response (one SSE line) may not exceed `max_event_bytes`, a non-streamed
  body `max_body_bytes`: a misbehaving upstream cannot make a worker buffer megabytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator

import httpx2
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient

from service.runs.errors import UpstreamModelError

logger = logging.getLogger(__name__)

_opened: contextvars.ContextVar[list[GuardedStream] | None] = contextvars.ContextVar(
    "upstream_responses", default=None
)


class UpstreamTooLarge(UpstreamModelError):
    """The upstream sent an event or body over the service's bound."""


class GuardedStream(httpx2.AsyncByteStream):
    """A response body that enforces the bounds and can be closed more than once."""

    def __init__(self, inner: httpx2.AsyncByteStream, *, event_stream: bool, limit: int) -> None:
        self._inner = inner
        self._event_stream = event_stream
        self._limit = limit
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0  # bytes of the current SSE line, or of the whole body
        async for part in self._inner:
            if self._event_stream:
                newline = part.rfind(b"\n")
                size = len(part) - newline - 1 if newline >= 0 else size + len(part)
            else:
                size += len(part)
            if size > self._limit:
                await self.aclose()
                what = "an event" if self._event_stream else "a response"
                raise UpstreamTooLarge(f"the upstream sent {what} over {self._limit} bytes")
            yield part

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self._inner.aclose()


class GuardedTransport(httpx2.AsyncBaseTransport):
    """Wraps the client's transport: bounds each response and records it for `upstream_call`."""

    def __init__(
        self, inner: httpx2.AsyncBaseTransport, *, max_event_bytes: int, max_body_bytes: int
    ) -> None:
        self._inner = inner
        self._max_event_bytes = max_event_bytes
        self._max_body_bytes = max_body_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        event_stream = response.headers.get("content-type", "").startswith("text/event-stream")
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        stream = GuardedStream(
            response.stream,
            event_stream=event_stream,
            limit=self._max_event_bytes if event_stream else self._max_body_bytes,
        )
        response.stream = stream
        opened = _opened.get()
        if opened is not None:
            opened.append(stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def guard(client: BaseOpenAIChatCompletionClient, *, max_event_bytes: int, max_body_bytes: int) -> None:
    """Put a `GuardedTransport` under an autogen-ext OpenAI (or Azure OpenAI) model client."""
    http = client._client._client  # the openai SDK's HTTP client (pinned versions; tested)
    inner = http._transport
    if not isinstance(inner, GuardedTransport):
        http._transport = GuardedTransport(
            inner, max_event_bytes=max_event_bytes, max_body_bytes=max_body_bytes
        )


@contextlib.asynccontextmanager
async def upstream_call() -> AsyncIterator[None]:
    """Close every upstream response opened inside the block when it ends, however it ends.

    The model client's request runs in a task it creates; that task copies this context, so the
    list set here collects its responses.
    """
    opened: list[GuardedStream] = []
    token = _opened.set(opened)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # a generator closed from another context
            _opened.reset(token)
        for stream in opened:
            if not stream.closed:
                try:
                    await stream.aclose()
                except Exception:  # a broken connection is closed either way
                    logger.debug("closing an upstream response failed", exc_info=True)
