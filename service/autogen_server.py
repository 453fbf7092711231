"""The heart of the service: run an AutoGen team for an OpenAI chat-completions request.

Four functions, by contract:
- `serve_autogen` runs the requested team, streaming or not;
- `generate_streaming_response` turns the run's events (read from a bounded queue) into SSE;
- `create_non_streaming_response` formats a finished run as a `chat.completion`;
- `handle_response` turns any response model into a JSON-ready dict (it lives in
  `service.serving.serialize`, shared with the Responses API).
Each turns its failures into an HTTP 500 with a generic message, logs the cause with the trace id,
and counts it in `autogen_errors_total{function=...}`.

The steps every API shares (admission, the capacity slot, metrics, cancellation, the deadline, the
status before a stream's first event, the request's end) are one pipeline, `service.serving.pipeline`;
this module supplies the chat-completions parts (`ChatCompletionsCall`). The run itself
(`service.runs.execute`) is the same for both modes; so is the text of the answer and of the activity
(`service.encoders`): a stream and a non-streamed response carry the same answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import StreamingResponse

from service.contract.activity import ActivityMode
from service.contract.chat import ChatCompletionChunk, Input, Output, new_completion_id, now
from service.contract.errors import OpenAIError
from service.contract.protocols import CHAT_COMPLETIONS
from service.contract.sse import SSE_DONE, encode_event
from service.encoders.chat_completions import ChatStreamEncoder, completion_output
from service.observability.metrics import Outcome, RequestObserver
from service.observability.tracing import traced
from service.runs.events import RunEnded, RunEvent
from service.serving.chat_inputs import chat_run_inputs
from service.serving.context import ServingContext
from service.serving.errors import CoreFunctionError
from service.serving.pipeline import Prepared, serve, stream_deadline_s
from service.serving.request_run import RequestRun
from service.serving.serialize import handle_response
from service.serving.stream import pump_events
from service.workflows.registry import Workflow

logger = logging.getLogger("service.autogen_server")

__all__ = [
    "create_non_streaming_response",
    "encode_chunk",
    "generate_streaming_response",
    "handle_response",
    "serve_autogen",
]


def encode_chunk(chunk: ChatCompletionChunk) -> str:
    """A chunk as an SSE event, through `handle_response`."""
    return encode_event(handle_response(chunk))


def _error_event(error: OpenAIError) -> str:
    return encode_event(handle_response(error.body()))


@dataclass
class ChatStreamWriter:
    """The chat-completions wire format of `pump_events`: chunks, `data: [DONE]`, error events."""

    encoder: ChatStreamEncoder
    # The encoder's own `feed`, bound once: one call less per token.
    feed: Callable[[RunEvent], list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.feed = self.encoder.feed

    async def end(self, ended: RunEnded) -> tuple[list[str], Outcome]:
        return [*self.encoder.feed(ended), SSE_DONE], "ok"

    def error(self, error: OpenAIError) -> list[str]:
        return [_error_event(error)]


@traced
async def generate_streaming_response(
    inp: Input,
    queue: asyncio.Queue[RunEvent],
    encoder: ChatStreamEncoder,
    *,
    first: Sequence[RunEvent] = (),
    observer: RequestObserver | None = None,
    run: RequestRun | None = None,
    keepalive_s: float = 15.0,
    deadline_s: float | None = None,
    flush_interval_s: float = 0.0,
) -> AsyncIterator[str]:
    """Stream the running team's events to the client as Server-Sent Events.

    Reads the run events the producer puts on a bounded queue (after `first`, those already read)
    and yields what `encoder` makes of them: `data: {json}\\n\\n` chunks, `: ping\\n\\n` comments
    while an agent is thinking (so proxies keep the connection open), and `data: [DONE]\\n\\n` at the
    end. A failure after the first byte is sent as an OpenAI error event (`data: {"error": {...}}`)
    and ends the stream. (The loop is `service.serving.stream.pump_events`, shared with the
    Responses API.)

    Args:
        inp: the request (its `model` names the stream in logs and metrics).
        queue: bounded queue fed by the run; it ends with `RunEnded`.
        encoder: the chat-completions encoder of this stream.
        first: events already taken from the queue (before the HTTP status was committed).
        observer: records time to first token, chunk counts and the request's outcome (when no
            `run` is given).
        run: the request's bookkeeping (observer, slot), settled before the last write.
        keepalive_s: longest silence before a keep-alive comment.
        deadline_s: hard cap on the whole stream (the run's own deadline plus a margin).
        flush_interval_s: after a write, events are gathered for up to this long before the next
            write (the first output is written at once).

    Yields:
        SSE-encoded strings; the events already queued are joined into one string (one write).

    Raises:
        Nothing to the caller once streaming: failures become an error event. (The HTTP status is
        already sent; errors are logged and counted as `generate_streaming_response` 500s.)
    """
    if run is None and observer is not None:
        run = RequestRun(observer)
    async for write in pump_events(
        queue,
        ChatStreamWriter(encoder),
        first=first,
        run=run,
        keepalive_s=keepalive_s,
        deadline_s=deadline_s,
        flush_interval_s=flush_interval_s,
        preamble=1,  # the role chunk
        model=inp.model,
    ):
        yield write


@traced
def create_non_streaming_response(
    events: list[RunEvent], model: str, *, completion_id: str, created: int, mode: ActivityMode
) -> dict[str, Any]:
    """Format a finished run as an OpenAI `chat.completion` (an `Output`, as a dict).

    The message is the run's final answer, the same text a stream of the same run sends as content;
    the team's activity is in `message.reasoning_content` / `message.reasoning` (with
    `STREAM_ACTIVITY=reasoning`). With no answer, the message says that none was produced.

    Args:
        events: every event of the run, ending with `RunEnded`.
        model: the model id to echo.
        completion_id, created: the response's id and time.
        mode: where the activity goes (`STREAM_ACTIVITY` or the request's `stream_activity`).

    Returns:
        The `chat.completion` dict.

    Raises:
        CoreFunctionError: HTTP 500 if the run cannot be formatted (logged, counted).
    """
    try:
        output: Output = completion_output(
            events, completion_id=completion_id, created=created, model=model, mode=mode
        )
    except Exception:
        logger.exception("could not format the team's result", extra={"model": model})
        raise CoreFunctionError("create_non_streaming_response") from None
    return handle_response(output)


@dataclass
class ChatCompletionsCall:
    """The chat-completions parts of the serving pipeline (`service.serving.pipeline`) for one request."""

    inp: Input
    ctx: ServingContext
    api: str = CHAT_COMPLETIONS.name
    completion_id: str = field(default_factory=new_completion_id)

    @property
    def model(self) -> str:
        return self.inp.model

    @property
    def stream(self) -> bool:
        return bool(self.inp.stream)

    @property
    def mode(self) -> ActivityMode:
        return self.inp.stream_activity or self.ctx.settings.stream_activity

    async def admission(self) -> tuple[list[str], str]:
        return [message.text() for message in self.inp.messages], "messages"

    async def prepare(self, workflow: Workflow, run: RequestRun) -> Prepared:
        try:
            runner = workflow.build()
        except Exception:
            logger.exception("could not build the workflow", extra={"model": self.inp.model})
            raise CoreFunctionError("serve_autogen") from None
        # Its images (400 for a team that cannot see them) and its `response_format`.
        task, runner = await chat_run_inputs(self.inp, runner, self.ctx.settings)
        prompt = (
            [message.model_dump() for message in self.inp.messages] if self.ctx.settings.log_prompts else []
        )
        return Prepared(runner, task, self.completion_id, self.inp.completion_token_cap, prompt)

    def stream_body(
        self, queue: asyncio.Queue[RunEvent], first: list[RunEvent], run: RequestRun
    ) -> AsyncIterator[str]:
        settings = self.ctx.settings
        encoder = ChatStreamEncoder(
            completion_id=self.completion_id,
            created=now(),
            model=self.inp.model,
            mode=self.mode,
            include_usage=self.inp.wants_usage_chunk,
            encode=encode_chunk,
        )
        return generate_streaming_response(
            self.inp,
            queue,
            encoder,
            first=first,
            run=run,
            keepalive_s=settings.stream_keepalive_s,
            flush_interval_s=settings.stream_flush_interval_ms / 1000,
            deadline_s=stream_deadline_s(self.ctx),
        )

    async def whole_body(self, events: list[RunEvent], ended: RunEnded) -> dict[str, Any]:
        body = create_non_streaming_response(
            events, self.inp.model, completion_id=self.completion_id, created=now(), mode=self.mode
        )
        if self.ctx.settings.log_prompts:
            logger.info(
                "completion", extra={"model": self.inp.model, "completion": body["choices"][0]["message"]}
            )
        return body


@traced
async def serve_autogen(
    inp: Input, ctx: ServingContext, client_gone: Callable[[], Awaitable[None]] | None = None
) -> StreamingResponse | dict[str, Any]:
    """Run the AutoGen team named by `inp.model` for this conversation.

    Builds a fresh team (cheap: the parsed definition and the model clients are shared), turns the
    messages into its task, and runs it with a `CancellationToken`, a deadline (`WORKFLOW_TIMEOUT_S`)
    and a turn cap. Streaming requests get an SSE `StreamingResponse` fed by the run through a
    bounded queue; its status is committed when the run has its first event to show, so a run that
    fails before that gets its real status. The run is cancelled when the client goes away. (The
    steps shared with every API are `service.serving.pipeline.serve`; this is the chat-completions
    part, `ChatCompletionsCall`.)

    Args:
        inp: the validated request.
        ctx: registry, settings, metrics and capacity of this worker.
        client_gone: returns when the client has gone away: a non-streamed run is raced against
            it, and a stream whose first event is slow to come watches it.

    Returns:
        A `StreamingResponse` when `inp.stream` is true, else the `chat.completion` dict.

    Raises:
        OpenAIError: 404 unknown model, 400 request over the size bounds, 503 at capacity,
            502/504 upstream LLM failure or deadline (before the first byte of a stream).
        CoreFunctionError: HTTP 500 when AutoGen fails (logged with its cause, counted).
        ClientGone: the client went away before the answer or a stream's first event (its run is
            cancelled).
    """
    return await serve(ChatCompletionsCall(inp, ctx), ctx, client_gone)
