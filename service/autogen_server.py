"""The heart of the service: run an AutoGen team for an OpenAI chat-completions request.

Four functions, by contract:
- `serve_autogen` runs the requested team, streaming or not;
- `generate_streaming_response` turns the team's events (read from a bounded queue) into SSE;
- `create_non_streaming_response` formats a finished run as a `chat.completion`;
- `handle_response` turns any response model into a JSON-ready dict.
Each turns its failures into an HTTP 500 with a generic message, logs the cause with the trace
id, and counts it in `autogen_errors_total{function=...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import openai
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service.api.errors import (
    GENERIC_SERVER_ERROR,
    CoreFunctionError,
    OpenAIError,
    model_not_found,
)
from service.api.protocol import (
    AssistantMessage,
    Choice,
    Input,
    Output,
    Usage,
    new_completion_id,
    now,
)
from service.api.sse import SSE_DONE, SSE_KEEPALIVE, encode_event
from service.config import Settings
from service.observability.metrics import Outcome, RequestObserver, ServiceMetrics
from service.observability.run_trace import GEN_AI_INPUT_TOKENS, GEN_AI_OUTPUT_TOKENS, RunTrace, traced_run
from service.observability.tracing import inside_stream, traced
from service.protection.capacity import WorkflowSlots
from service.workflows.conversation import prompt_word_count, to_task
from service.workflows.registry import WorkflowRegistry, WorkflowRunner
from service.workflows.translate import (
    StreamTranslator,
    final_answer,
    hit_turn_limit,
    usage_of,
)

logger = logging.getLogger("service.autogen_server")

NO_ANSWER_MESSAGE = "The agents finished without producing an answer."
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
_FINAL_PUT_TIMEOUT_S = 5.0
_PRODUCER_STOP_TIMEOUT_S = 5.0
_MAX_EVENTS_PER_WRITE = 64


@dataclass
class ServingContext:
    """What the core functions need from the running app (built once in the lifespan)."""

    settings: Settings
    registry: WorkflowRegistry
    metrics: ServiceMetrics
    slots: WorkflowSlots


@dataclass(frozen=True)
class StreamEnd:
    """Queue item: the run is over and every chunk has been queued."""


@dataclass(frozen=True)
class StreamFailure:
    """Queue item: the run failed after the stream started; `error` is what the client may see."""

    error: OpenAIError
    outcome: Outcome = "server_error"


# A content event already SSE-encoded (`str`), another chunk (`ChatCompletionChunk`), or the end.
StreamItem = Any


@dataclass
class _StreamRun:
    """The resources of one streaming run, released exactly once when the response closes."""

    observer: RequestObserver
    slots: WorkflowSlots
    metrics: ServiceMetrics
    token: CancellationToken
    producer: asyncio.Task[None] | None = None
    closed: bool = field(default=False)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.token.cancel()
        producer = self.producer
        if producer is not None and not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(producer), _PRODUCER_STOP_TIMEOUT_S)
        self.observer.finish("cancelled")  # no-op when the stream already recorded its outcome
        self.metrics.active_streams.dec()
        self.slots.release()


class AgentStreamingResponse(StreamingResponse):
    """A StreamingResponse that always releases its run when the response ends, however it ends.

    A client disconnect cancels the response task; whether that lands inside the body iterator or
    in `send`, this `finally` cancels the team run (AgentChat `CancellationToken` + producer task).
    """

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=STREAM_HEADERS)
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


def _encode(item: Any) -> str:
    return encode_event(handle_response(item))


@traced
async def generate_streaming_response(
    inp: Input,
    queue: asyncio.Queue[StreamItem],
    *,
    observer: RequestObserver | None = None,
    keepalive_s: float = 15.0,
    deadline_s: float | None = None,
    flush_interval_s: float = 0.0,
) -> AsyncIterator[str]:
    """Stream the running team's chunks to the client as Server-Sent Events.

    Reads the items the team's producer puts on a bounded queue and yields
    `data: {json}\\n\\n` for every chunk, `: ping\\n\\n` comments while an agent is thinking (so
    proxies keep the connection open), and `data: [DONE]\\n\\n` at the end. A failure after the
    first byte is sent as an OpenAI error event (`data: {"error": {...}}`) and ends the stream.

    Args:
        inp: the request (its `model` names the stream in logs and metrics).
        queue: bounded queue fed by the producer; it ends with `StreamEnd` or `StreamFailure`.
        observer: records time to first token, chunk counts and the request's outcome.
        keepalive_s: longest silence before a keep-alive comment.
        deadline_s: hard cap on the whole stream (the producer's own deadline plus a margin).
        flush_interval_s: after a write, chunks are gathered for up to this long before the next
            write (the first content chunk is written at once).

    Yields:
        SSE-encoded strings; the events already queued are joined into one string (one write).

    Raises:
        Nothing to the caller once streaming: failures become an error event. (The HTTP status is
        already sent; errors are logged and counted as `generate_streaming_response` 500s.)
    """
    deadline = time.monotonic() + deadline_s if deadline_s else None
    last_write = 0.0
    content_sent = False
    try:
        while True:
            if flush_interval_s and content_sent:
                # Gather what the team writes during the interval after the last write: one wake-up
                # per write while tokens flow, instead of one per token.
                hold = last_write + flush_interval_s - time.monotonic()
                if hold > 0:
                    await asyncio.sleep(hold)
            if queue.empty():
                wait = keepalive_s if deadline is None else min(keepalive_s, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError
                try:
                    async with asyncio.timeout(wait):
                        item = await queue.get()
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    yield SSE_KEEPALIVE
                    continue
            else:
                item = queue.get_nowait()
            # Everything already queued leaves in one write: the client gets the same SSE events,
            # the server makes one send (and one loop turn) for many when the client lags behind.
            events: list[str] = []
            while True:
                if isinstance(item, StreamEnd | StreamFailure):
                    if observer:
                        observer.chunks(len(events))
                        observer.finish("ok" if isinstance(item, StreamEnd) else item.outcome)
                    events.append(SSE_DONE if isinstance(item, StreamEnd) else _encode(item.error.body()))
                    yield "".join(events)
                    return
                if isinstance(item, str):  # a content event, encoded from the stream's template
                    events.append(item)
                    if not content_sent:
                        content_sent = True
                        if observer is not None:
                            observer.first_content()
                else:
                    events.append(_encode(item))
                if queue.empty() or len(events) >= _MAX_EVENTS_PER_WRITE:
                    break
                item = queue.get_nowait()
            if observer is not None:
                observer.chunks(len(events))
            yield "".join(events)
            last_write = time.monotonic()
    except TimeoutError:
        logger.warning("stream deadline passed", extra={"model": inp.model})
        if observer:
            observer.finish("timeout")
        yield _encode(OpenAIError(504, "The workflow did not finish in time.", code="timeout").body())
    except CoreFunctionError as exc:
        if observer:
            observer.error(exc.function)
            observer.finish("server_error")
        yield _encode(exc.body())
    except Exception:
        logger.exception("streaming failed", extra={"model": inp.model})
        if observer:
            observer.error("generate_streaming_response")
            observer.finish("server_error")
        yield _encode(CoreFunctionError("generate_streaming_response").body())


@traced
def create_non_streaming_response(
    chat_results: TaskResult | None,
    model: str,
    *,
    prompt_tokens_estimate: int = 0,
    token_cap: int | None = None,
) -> dict[str, Any]:
    """Format a finished team run as an OpenAI `chat.completion` (an `Output`, as a dict).

    The message is the team's final answer: the last agent message, `TERMINATE` removed. With no
    result, or no agent text in it, the message says that no answer was produced.

    Args:
        chat_results: the run's `TaskResult` (or None).
        model: the model id to echo.
        prompt_tokens_estimate: used when the model clients reported no usage.
        token_cap: `max_tokens` of the request; a longer answer is cut, `finish_reason="length"`.

    Returns:
        The `chat.completion` dict.

    Raises:
        CoreFunctionError: HTTP 500 if the result cannot be formatted (logged, counted).
    """
    try:
        agent, text = final_answer(chat_results)
        finish_reason: Any = "length" if hit_turn_limit(chat_results) else "stop"
        if not text:
            text, agent = NO_ANSWER_MESSAGE, None
        if token_cap is not None:
            words = text.split(" ")
            if len(words) > token_cap:
                text, finish_reason = " ".join(words[:token_cap]), "length"
        prompt, completion = usage_of(chat_results)
        if prompt == 0 and completion == 0:
            prompt, completion = prompt_tokens_estimate, len(text.split())
        output = Output(
            model=model,
            choices=[Choice(message=AssistantMessage(content=text, name=agent), finish_reason=finish_reason)],
            usage=Usage.of(prompt, completion),
        )
    except Exception:
        logger.exception("could not format the team's result", extra={"model": model})
        raise CoreFunctionError("create_non_streaming_response") from None
    return handle_response(output)


def _error_type(exc: BaseException) -> type[BaseException]:
    """The type of `exc`; for a team run, the type of the agent's error that AgentChat re-raised as
    `RuntimeError("<TypeName>: <message>...")` (its group chat serializes errors from the runtime)."""
    if type(exc) is RuntimeError:
        candidate = getattr(openai, str(exc).split(":", 1)[0].strip(), None)
        if isinstance(candidate, type) and issubclass(candidate, openai.APIError):
            return candidate
    return type(exc)


def upstream_error(exc: BaseException) -> OpenAIError | None:
    """The client-facing error for a failure of the LLM behind the team (no upstream details)."""
    kind = _error_type(exc)
    if issubclass(kind, openai.APITimeoutError):
        return OpenAIError(504, "The upstream model did not answer in time.", code="upstream_timeout")
    # APIError covers HTTP errors, connection failures and error events inside the model's stream.
    if issubclass(kind, openai.APIError):
        return OpenAIError(502, "The upstream model failed to answer.", code="upstream_error")
    return None


def _check_bounds(inp: Input, settings: Settings) -> None:
    if len(inp.messages) > settings.max_messages:
        raise OpenAIError(
            400, f"Too many messages: at most {settings.max_messages} are accepted.", param="messages"
        )
    for index, message in enumerate(inp.messages):
        if len(message.text()) > settings.max_message_chars:
            raise OpenAIError(
                400,
                f"Message {index} is too long: at most {settings.max_message_chars} characters.",
                param=f"messages.{index}.content",
            )


@contextlib.asynccontextmanager
async def _deadline(seconds: float, token: CancellationToken) -> AsyncIterator[None]:
    """`asyncio.timeout` that also cancels the run's token when it fires.

    AgentChat's `run_stream` waits (in its `finally`) for the team's runtime to go idle before the
    timeout's cancellation gets through; cancelling the token at the same instant stops the agents'
    model calls, so the deadline ends the run at once instead of when the team is done.
    """
    loop = asyncio.get_running_loop()
    when = loop.time() + seconds
    cancel_run = loop.call_at(when, token.cancel)
    try:
        async with asyncio.timeout_at(when):
            yield
    finally:
        cancel_run.cancel()


def _overloaded() -> OpenAIError:
    return OpenAIError(
        503,
        "The server is at its limit of concurrent workflows. Retry shortly.",
        code="overloaded",
        headers={"Retry-After": "1"},
    )


@traced
async def serve_autogen(inp: Input, ctx: ServingContext) -> StreamingResponse | dict[str, Any]:
    """Run the AutoGen team named by `inp.model` for this conversation.

    Builds a fresh team (cheap: the parsed definition and the model clients are shared), turns
    the messages into its task, and runs it with a `CancellationToken`, a deadline
    (`WORKFLOW_TIMEOUT_S`) and a turn cap. Streaming requests get an SSE `StreamingResponse` fed
    by a producer task through a bounded queue; the run is cancelled when the client goes away.

    Args:
        inp: the validated request.
        ctx: registry, settings, metrics and capacity of this worker.

    Returns:
        A `StreamingResponse` when `inp.stream` is true, else the `chat.completion` dict.

    Raises:
        OpenAIError: 404 unknown model, 400 request over the size bounds, 503 at capacity,
            502/504 upstream LLM failure or deadline.
        CoreFunctionError: HTTP 500 when AutoGen fails (logged with its cause, counted).
    """
    workflow = ctx.registry.get(inp.model)
    stream = bool(inp.stream)
    observer = ctx.metrics.request(inp.model, stream)
    try:
        if workflow is None:
            raise model_not_found(inp.model)
        _check_bounds(inp, ctx.settings)
        if not ctx.slots.try_acquire():
            ctx.metrics.rejected.labels("overload").inc()
            raise _overloaded()
    except OpenAIError as exc:
        observer.finish("rate_limited" if exc.status_code == 429 else "client_error")
        raise
    try:
        task = to_task(inp.messages)
        runner = workflow.build()
    except Exception:
        ctx.slots.release()
        observer.finish("server_error")
        logger.exception("could not build the workflow", extra={"model": inp.model})
        raise CoreFunctionError("serve_autogen") from None
    if ctx.settings.log_prompts:
        logger.info("prompt", extra={"model": inp.model, "prompt": [m.model_dump() for m in inp.messages]})
    token = CancellationToken()
    if stream:
        return _start_stream(inp, ctx, runner, task, token, observer, team=workflow.kind == "team")
    try:
        return await _run_to_completion(inp, ctx, runner, task, token, observer)
    finally:
        ctx.slots.release()


async def _run_to_completion(
    inp: Input,
    ctx: ServingContext,
    runner: WorkflowRunner,
    task: list[Any],
    token: CancellationToken,
    observer: RequestObserver,
) -> dict[str, Any]:
    task_ids = {id(message) for message in task}

    async def run_team() -> TaskResult | None:
        result: TaskResult | None = None
        with traced_run(inp.model, new_completion_id(), observer) as run:
            turn_ended = _agent_turn_ended(run, observer)
            async with _deadline(ctx.settings.workflow_timeout_s, token):
                async for event in runner.run_stream(task=task, cancellation_token=token):
                    if isinstance(event, TaskResult):
                        result = event
                    elif isinstance(event, BaseChatMessage) and id(event) not in task_ids:
                        turn_ended(event.source)
            _record_usage_on_span(run, result)
        return result

    # The run is a child task awaited through `asyncio.wait`, which does not pass a cancellation
    # on: when the client goes away, the token is cancelled first (stopping the agents' model
    # calls at once), then the run. Cancelling the run alone would make AgentChat wait in its
    # `finally` for the team to go idle, i.e. finish its current turns.
    team_run = asyncio.create_task(run_team(), name=f"workflow:{inp.model}")
    try:
        await asyncio.wait({team_run})
        result = team_run.result()
    except asyncio.CancelledError:
        token.cancel()
        team_run.cancel()
        await asyncio.wait({team_run}, timeout=_PRODUCER_STOP_TIMEOUT_S)
        observer.finish("cancelled")
        raise
    except TimeoutError:
        token.cancel()
        observer.finish("timeout")
        logger.warning("workflow deadline passed", extra={"model": inp.model})
        raise OpenAIError(504, "The workflow did not finish in time.", code="timeout") from None
    except Exception as exc:
        token.cancel()
        mapped = upstream_error(exc)
        if mapped is not None:
            observer.finish("timeout" if mapped.status_code == 504 else "server_error")
            logger.error("upstream model failed: %s", type(exc).__name__, extra={"model": inp.model})
            raise mapped from None
        observer.finish("server_error")
        logger.exception("workflow failed", extra={"model": inp.model})
        raise CoreFunctionError("serve_autogen") from None
    try:
        body = create_non_streaming_response(
            result,
            inp.model,
            prompt_tokens_estimate=prompt_word_count(inp.messages),
            token_cap=inp.completion_token_cap,
        )
    except CoreFunctionError:
        observer.finish("server_error")
        raise
    usage = body["usage"]
    observer.tokens(usage["prompt_tokens"], usage["completion_tokens"])
    if ctx.settings.log_prompts:
        logger.info("completion", extra={"model": inp.model, "completion": body["choices"][0]["message"]})
    observer.finish("ok")
    return body


def _start_stream(
    inp: Input,
    ctx: ServingContext,
    runner: WorkflowRunner,
    task: list[Any],
    token: CancellationToken,
    observer: RequestObserver,
    *,
    team: bool,
) -> StreamingResponse:
    queue: asyncio.Queue[StreamItem] = asyncio.Queue(maxsize=ctx.settings.stream_queue_size)
    translator = StreamTranslator(
        completion_id=new_completion_id(),
        created=now(),
        model=inp.model,
        team=team,
        input_messages=frozenset(id(message) for message in task),
        token_cap=inp.completion_token_cap,
        on_agent_message=observer.agent_message,
        encode=_encode,
    )
    run = _StreamRun(observer=observer, slots=ctx.slots, metrics=ctx.metrics, token=token)
    ctx.metrics.active_streams.inc()
    run.producer = asyncio.create_task(
        _produce(inp, ctx, runner, task, token, translator, queue, observer),
        name=f"workflow:{inp.model}",
    )
    body = generate_streaming_response(
        inp,
        queue,
        observer=observer,
        keepalive_s=ctx.settings.stream_keepalive_s,
        flush_interval_s=ctx.settings.stream_flush_interval_ms / 1000,
        deadline_s=ctx.settings.workflow_timeout_s + _FINAL_PUT_TIMEOUT_S,
    )
    return AgentStreamingResponse(body, on_close=run.close)


def _agent_turn_ended(run: RunTrace, observer: RequestObserver) -> Callable[[str], None]:
    def ended(agent: str) -> None:
        run.end_turn(agent)
        observer.agent_message(agent)

    return ended


def _record_usage_on_span(
    run: RunTrace, result: TaskResult | None, prompt: int | None = None, completion: int | None = None
) -> None:
    if prompt is None or completion is None:
        prompt, completion = usage_of(result)
    span = run.workflow_span
    span.set_attribute(GEN_AI_INPUT_TOKENS, prompt)
    span.set_attribute(GEN_AI_OUTPUT_TOKENS, completion)
    span.set_attribute("autogen.model_calls", run.model_calls)


async def _queue_run_events(
    runner: WorkflowRunner,
    task: list[Any],
    token: CancellationToken,
    translator: StreamTranslator,
    queue: asyncio.Queue[StreamItem],
) -> TaskResult | None:
    """Put the chunks of every run event on the queue (waiting when the client reads slowly)."""
    result: TaskResult | None = None
    await queue.put(translator.start())
    try:
        async for event in runner.run_stream(task=task, cancellation_token=token):
            if isinstance(event, TaskResult):
                result = event
                continue
            for chunk in translator.on_event(event):
                await queue.put(chunk)
            if translator.capped:
                token.cancel()
                break
    except asyncio.CancelledError:
        # `max_tokens` reached: the run was cancelled through its token, not this task.
        current = asyncio.current_task()
        if not translator.capped or (current is not None and current.cancelling()):
            raise
    return result


def _token_sink(
    translator: StreamTranslator, queue: asyncio.Queue[StreamItem], token: CancellationToken
) -> Callable[[str, str], Awaitable[None]]:
    """Where the agents' model clients send tokens: straight into this stream's bounded queue."""

    async def sink(agent: str, text: str) -> None:
        for event in translator.on_token(agent, text):
            if queue.full():  # the client reads slower than the team writes: wait for room
                await queue.put(event)
            else:
                queue.put_nowait(event)
        if translator.capped:
            token.cancel()

    return sink


async def _put_final(queue: asyncio.Queue[StreamItem], item: StreamItem) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(queue.put(item), _FINAL_PUT_TIMEOUT_S)


async def _produce(
    inp: Input,
    ctx: ServingContext,
    runner: WorkflowRunner,
    task: list[Any],
    token: CancellationToken,
    translator: StreamTranslator,
    queue: asyncio.Queue[StreamItem],
    observer: RequestObserver,
) -> None:
    """Run the team and queue its chunks; always ends the queue with `StreamEnd` or `StreamFailure`."""
    # Serializing chunks here is per-chunk work of the stream, like in `generate_streaming_response`:
    # no `handle_response` spans. (This task runs in its own copy of the context.)
    inside_stream.set(True)
    try:
        with traced_run(inp.model, translator.completion_id, observer) as run:
            translator.on_agent_message = _agent_turn_ended(run, observer)
            run.token_sink = _token_sink(translator, queue, token)
            async with _deadline(ctx.settings.workflow_timeout_s, token):
                result = await _queue_run_events(runner, task, token, translator, queue)
                await queue.put(translator.finish(result))
                prompt, completion = usage_of(result)
                if prompt == 0 and completion == 0:
                    prompt, completion = prompt_word_count(inp.messages), translator.completion_pieces
                observer.tokens(prompt, completion)
                _record_usage_on_span(run, result, prompt, completion)
                if ctx.settings.log_prompts:
                    logger.info(
                        "completion", extra={"model": inp.model, "completion": final_answer(result)[1]}
                    )
                if inp.wants_usage_chunk:
                    await queue.put(translator.usage_chunk(Usage.of(prompt, completion)))
    except asyncio.CancelledError:
        token.cancel()
        raise
    except TimeoutError:
        token.cancel()
        logger.warning("workflow deadline passed", extra={"model": inp.model})
        await _put_final(
            queue,
            StreamFailure(
                OpenAIError(504, "The workflow did not finish in time.", code="timeout"), "timeout"
            ),
        )
        return
    except Exception as exc:
        token.cancel()
        mapped = upstream_error(exc)
        if mapped is not None:
            logger.error("upstream model failed: %s", type(exc).__name__, extra={"model": inp.model})
            failure = StreamFailure(mapped, "timeout" if mapped.status_code == 504 else "server_error")
        else:
            logger.exception("workflow failed during the stream", extra={"model": inp.model})
            observer.error("serve_autogen")
            failure = StreamFailure(CoreFunctionError("serve_autogen", GENERIC_SERVER_ERROR))
        await _put_final(queue, failure)
        return
    await _put_final(queue, StreamEnd())
