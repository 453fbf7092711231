"""The heart of the service: run an AutoGen team for an OpenAI chat-completions request.

Four functions, by contract:
- `serve_autogen` runs the requested team, streaming or not;
- `generate_streaming_response` turns the run's events (read from a bounded queue) into SSE;
- `create_non_streaming_response` formats a finished run as a `chat.completion`;
- `handle_response` turns any response model into a JSON-ready dict.
Each turns its failures into an HTTP 500 with a generic message, logs the cause with the trace id,
and counts it in `autogen_errors_total{function=...}`.

The run itself (`service.runs.execute`) is the same for both modes; so is the text of the answer and
of the activity (`service.encoders`): a stream and a non-streamed response carry the same answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken
from fastapi.responses import StreamingResponse

from service.contract.chat import ActivityMode, ChatCompletionChunk, Input, Output, new_completion_id, now
from service.contract.errors import OpenAIError, deadline_passed
from service.contract.sse import SSE_DONE, SSE_KEEPALIVE, encode_event
from service.encoders.chat_completions import ChatStreamEncoder, completion_output
from service.observability.metrics import RequestObserver
from service.observability.tracing import traced
from service.runs.context import ListSink, QueueSink
from service.runs.events import RunEnded, RunEvent
from service.runs.execute import Runner, RunRequest, execute_run
from service.serving.admission import admit
from service.serving.context import ServingContext
from service.serving.errors import CoreFunctionError, run_failure
from service.serving.stream import AgentStreamingResponse, StreamRun, first_events
from service.serving.task import to_task

logger = logging.getLogger("service.autogen_server")

_MAX_EVENTS_PER_WRITE = 64
# A stream may outlive WORKFLOW_TIMEOUT_S by this much: the run's last events after its deadline.
STREAM_MARGIN_S = 5.0


@traced
def handle_response(response: Any) -> dict[str, Any]:
    """Turn a response model (an `Output`, a stream chunk, an error body) into a JSON-ready dict.

    Args:
        response: a pydantic model (anything with `model_dump`).

    Returns:
        The model as a dict of JSON types.

    Raises:
        CoreFunctionError: HTTP 500 when `response` is a `str` or has no `model_dump`, or when
            serialization fails; the cause is logged, the client sees a generic message.
    """
    if isinstance(response, str) or not hasattr(response, "model_dump"):
        logger.error("handle_response got an unserializable %s", type(response).__name__)
        raise CoreFunctionError("handle_response")
    try:
        data = response.model_dump(mode="json")
    except Exception:
        logger.exception("handle_response could not serialize %s", type(response).__name__)
        raise CoreFunctionError("handle_response") from None
    if not isinstance(data, dict):
        logger.error("handle_response: model_dump of %s returned no dict", type(response).__name__)
        raise CoreFunctionError("handle_response")
    return data


def encode_chunk(chunk: ChatCompletionChunk) -> str:
    """A chunk as an SSE event, through `handle_response`."""
    return encode_event(handle_response(chunk))


def _error_event(error: OpenAIError) -> str:
    return encode_event(handle_response(error.body()))


@traced
async def generate_streaming_response(
    inp: Input,
    queue: asyncio.Queue[RunEvent],
    encoder: ChatStreamEncoder,
    *,
    first: Sequence[RunEvent] = (),
    observer: RequestObserver | None = None,
    keepalive_s: float = 15.0,
    deadline_s: float | None = None,
    flush_interval_s: float = 0.0,
) -> AsyncIterator[str]:
    """Stream the running team's events to the client as Server-Sent Events.

    Reads the run events the producer puts on a bounded queue (after `first`, those already read)
    and yields what `encoder` makes of them: `data: {json}\\n\\n` chunks, `: ping\\n\\n` comments
    while an agent is thinking (so proxies keep the connection open), and `data: [DONE]\\n\\n` at the
    end. A failure after the first byte is sent as an OpenAI error event (`data: {"error": {...}}`)
    and ends the stream.

    Args:
        inp: the request (its `model` names the stream in logs and metrics).
        queue: bounded queue fed by the run; it ends with `RunEnded`.
        encoder: the chat-completions encoder of this stream.
        first: events already taken from the queue (before the HTTP status was committed).
        observer: records time to first token, chunk counts and the request's outcome.
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
            # Everything already queued leaves in one write: the client gets the same SSE events,
            # the server makes one send (and one loop turn) for many when the client lags behind.
            events: list[str] = []
            while True:
                if isinstance(event, RunEnded):
                    failure = run_failure(event)
                    if failure is None:
                        events.extend(encoder.feed(event))
                        events.append(SSE_DONE)
                    else:
                        error = failure[0]
                        if isinstance(error, CoreFunctionError) and observer is not None:
                            observer.error(error.function)
                        events.append(_error_event(error))
                    if observer is not None:
                        observer.chunks(len(events))
                        observer.finish("ok" if failure is None else failure[1])
                    yield "".join(events)
                    return
                written = encoder.feed(event)
                if written:
                    events.extend(written)
                if pending:
                    event = pending.pop(0)
                elif queue.empty() or len(events) >= _MAX_EVENTS_PER_WRITE:
                    break
                else:
                    event = queue.get_nowait()
            if not events:
                continue
            written_total += len(events)
            if not output_sent and written_total > 1:  # more than the role chunk
                output_sent = True
                if observer is not None:
                    observer.first_content()
            if observer is not None:
                observer.chunks(len(events))
            yield "".join(events)
            last_write = time.monotonic()
    except TimeoutError:
        logger.warning("stream deadline passed", extra={"model": inp.model})
        if observer:
            observer.finish("timeout")
        yield _error_event(deadline_passed())
    except CoreFunctionError as exc:
        if observer:
            observer.error(exc.function)
            observer.finish("server_error")
        yield _error_event(exc)
    except Exception:
        logger.exception("streaming failed", extra={"model": inp.model})
        if observer:
            observer.error("generate_streaming_response")
            observer.finish("server_error")
        yield _error_event(CoreFunctionError("generate_streaming_response"))


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


@traced
async def serve_autogen(
    inp: Input, ctx: ServingContext, client_gone: Callable[[], Awaitable[None]] | None = None
) -> StreamingResponse | dict[str, Any]:
    """Run the AutoGen team named by `inp.model` for this conversation.

    Builds a fresh team (cheap: the parsed definition and the model clients are shared), turns the
    messages into its task, and runs it with a `CancellationToken`, a deadline (`WORKFLOW_TIMEOUT_S`)
    and a turn cap. Streaming requests get an SSE `StreamingResponse` fed by the run through a
    bounded queue; its status is committed when the run has its first event to show, so a run that
    fails before that gets its real status. The run is cancelled when the client goes away.

    Args:
        inp: the validated request.
        ctx: registry, settings, metrics and capacity of this worker.
        client_gone: returns when the client has gone away; a stream whose first event is slow
            to come watches it (a non-streaming request is raced against it by the route).

    Returns:
        A `StreamingResponse` when `inp.stream` is true, else the `chat.completion` dict.

    Raises:
        OpenAIError: 404 unknown model, 400 request over the size bounds, 503 at capacity,
            502/504 upstream LLM failure or deadline (before the first byte of a stream).
        CoreFunctionError: HTTP 500 when AutoGen fails (logged with its cause, counted).
        ClientGone: the client went away before a stream's first event (its run is cancelled).
    """
    stream = bool(inp.stream)
    observer = ctx.metrics.request(inp.model, stream)
    workflow = admit(inp.model, [message.text() for message in inp.messages], ctx, observer, "messages")
    settings = ctx.settings
    completion_id = new_completion_id()
    try:
        task = to_task(inp.messages)
        runner = workflow.build()
    except Exception:
        ctx.slots.release()
        observer.finish("server_error")
        logger.exception("could not build the workflow", extra={"model": inp.model})
        raise CoreFunctionError("serve_autogen") from None
    if settings.log_prompts:
        logger.info("prompt", extra={"model": inp.model, "prompt": [m.model_dump() for m in inp.messages]})
    request = workflow.run_request(
        completion_id,
        deadline_s=settings.workflow_timeout_s,
        stream_tokens=stream,
        max_tokens=inp.completion_token_cap,
    )
    mode: ActivityMode = inp.stream_activity or settings.stream_activity
    token = CancellationToken()
    if stream:
        sink = QueueSink(settings.stream_queue_size)
        run = StreamRun(observer=observer, slots=ctx.slots, metrics=ctx.metrics, token=token)
        try:
            run.start(execute_run(runner, task, request, sink, token, observer), f"workflow:{inp.model}")
            first = await first_events(sink.queue, settings.stream_keepalive_s, client_gone)
            if first and isinstance(first[-1], RunEnded):
                failure = run_failure(first[-1])
                if failure is not None:  # raised: the error handler counts a CoreFunctionError
                    error, outcome = failure
                    observer.finish(outcome)
                    raise error
        except BaseException:
            await run.close()
            raise
        encoder = ChatStreamEncoder(
            completion_id=completion_id,
            created=now(),
            model=inp.model,
            mode=mode,
            include_usage=inp.wants_usage_chunk,
            encode=encode_chunk,
        )
        body = generate_streaming_response(
            inp,
            sink.queue,
            encoder,
            first=first,
            observer=observer,
            keepalive_s=settings.stream_keepalive_s,
            flush_interval_s=settings.stream_flush_interval_ms / 1000,
            deadline_s=settings.workflow_timeout_s + STREAM_MARGIN_S,
        )
        return AgentStreamingResponse(body, on_close=run.close)
    try:
        return await _run_to_completion(inp, ctx, runner, task, request, token, observer, mode, completion_id)
    finally:
        ctx.slots.release()


async def _run_to_completion(
    inp: Input,
    ctx: ServingContext,
    runner: Runner,
    task: Sequence[BaseChatMessage],
    request: RunRequest,
    token: CancellationToken,
    observer: RequestObserver,
    mode: ActivityMode,
    completion_id: str,
) -> dict[str, Any]:
    sink = ListSink()
    # The run is a child task awaited through `asyncio.wait`, which does not pass a cancellation
    # on: when the client goes away, the token is cancelled first (stopping the agents' model
    # calls at once), then the run. Cancelling the run alone would make AgentChat wait in its
    # `finally` for the team to go idle, i.e. finish its current turns.
    run = asyncio.create_task(
        execute_run(runner, task, request, sink, token, observer), name=f"workflow:{inp.model}"
    )
    try:
        await asyncio.wait({run})
    except asyncio.CancelledError:
        token.cancel()
        run.cancel()
        await asyncio.wait({run}, timeout=5.0)
        observer.finish("cancelled")
        raise
    ended = run.result()
    failure = run_failure(ended)
    if failure is not None:  # raised: the error handler counts a CoreFunctionError
        error, outcome = failure
        observer.finish(outcome)
        raise error
    try:
        body = create_non_streaming_response(
            sink.events, inp.model, completion_id=completion_id, created=now(), mode=mode
        )
    except CoreFunctionError:
        observer.finish("server_error")
        raise
    if ctx.settings.log_prompts:
        logger.info("completion", extra={"model": inp.model, "completion": body["choices"][0]["message"]})
    observer.finish("ok")
    return body
