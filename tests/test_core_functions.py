"""The four core functions, success and failure paths, called directly."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import TextMessage
from autogen_core.models import RequestUsage
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, field_serializer

from service.api.errors import CoreFunctionError, OpenAIError
from service.api.protocol import ChatMessage, Input, Output
from service.autogen_server import (
    NO_ANSWER_MESSAGE,
    ServingContext,
    StreamEnd,
    StreamFailure,
    create_non_streaming_response,
    generate_streaming_response,
    handle_response,
    serve_autogen,
)
from service.observability.metrics import ServiceMetrics
from service.protection.capacity import WorkflowSlots
from service.workflows.registry import WorkflowRegistry
from service.workflows.translate import StreamTranslator
from tests.conftest import make_settings


def request(model: str = "demo-team", stream: bool = False, **extra: Any) -> Input:
    return Input(
        model=model, messages=[ChatMessage(role="user", content="What is AutoGen?")], stream=stream, **extra
    )


def context(**settings: Any) -> ServingContext:
    config = make_settings(**settings)
    registry = WorkflowRegistry(config)
    registry.load_defaults()
    metrics = ServiceMetrics(known_models=[w.id for w in registry.all()])
    return ServingContext(config, registry, metrics, WorkflowSlots(config.max_concurrent_workflows))


def counter(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# --- handle_response ----------------------------------------------------------------------------
def test_handle_response_returns_the_models_dict() -> None:
    output = Output(
        model="m", choices=[], usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    )
    data = handle_response(output)
    assert data["object"] == "chat.completion" and data["usage"]["total_tokens"] == 3
    json.dumps(data)


@pytest.mark.parametrize("bad", ["a string", 42, None, {"a": 1}, object()])
def test_handle_response_rejects_what_has_no_model_dump(bad: object) -> None:
    with pytest.raises(CoreFunctionError) as caught:
        handle_response(bad)
    assert caught.value.status_code == 500 and caught.value.function == "handle_response"
    assert "string" not in caught.value.message and "42" not in caught.value.message


def test_handle_response_turns_serialization_errors_into_a_generic_500() -> None:
    class Broken(BaseModel):
        value: int = 1

        @field_serializer("value")
        def explode(self, value: int) -> int:
            raise RuntimeError("secret internal detail")

    with pytest.raises(CoreFunctionError) as caught:
        handle_response(Broken())
    assert caught.value.status_code == 500
    assert "secret" not in caught.value.message


# --- create_non_streaming_response --------------------------------------------------------------
def test_non_streaming_response_is_the_final_answer_without_terminate() -> None:
    user = TextMessage(source="user", content="hi")
    usage = RequestUsage(prompt_tokens=10, completion_tokens=5)
    result = TaskResult(
        messages=[
            user,
            TextMessage(source="planner", content="plan", models_usage=usage),
            TextMessage(source="reviewer", content="The answer. TERMINATE", models_usage=usage),
        ],
        stop_reason="Text 'TERMINATE' mentioned",
    )
    body = create_non_streaming_response(result, "demo-team")
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "The answer.", "name": "reviewer"}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"


@pytest.mark.parametrize("result", [None, TaskResult(messages=[TextMessage(source="user", content="q")])])
def test_non_streaming_response_without_result_says_no_answer(result: TaskResult | None) -> None:
    body = create_non_streaming_response(result, "demo-team", prompt_tokens_estimate=3)
    assert body["choices"][0]["message"]["content"] == NO_ANSWER_MESSAGE
    assert body["usage"]["prompt_tokens"] == 3


def test_non_streaming_response_applies_max_tokens() -> None:
    result = TaskResult(messages=[TextMessage(source="a", content="one two three four five")])
    body = create_non_streaming_response(result, "m", token_cap=2)
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] == "length"


def test_non_streaming_response_formatting_failure_is_a_500() -> None:
    with pytest.raises(CoreFunctionError) as caught:
        create_non_streaming_response("not a task result", "m")  # type: ignore[arg-type]
    assert caught.value.function == "create_non_streaming_response"


# --- generate_streaming_response ----------------------------------------------------------------
def translator() -> StreamTranslator:
    return StreamTranslator(
        completion_id="chatcmpl-x", created=1, model="m", team=False, input_messages=frozenset()
    )


async def collect(inp: Input, queue: asyncio.Queue[Any], **kwargs: Any) -> list[str]:
    """The SSE events, however they were grouped into writes."""
    writes = [write async for write in generate_streaming_response(inp, queue, **kwargs)]
    return [event + "\n\n" for event in "".join(writes).split("\n\n") if event]


def queued_hello_stream(maxsize: int) -> asyncio.Queue[Any]:
    """A whole stream already queued: role chunk, one agent message "hello", finish, end."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=maxsize)
    tr = translator()
    for item in (
        tr.start(),
        *tr.on_event(TextMessage(source="agent", content="hello")),
        tr.finish(None),
        StreamEnd(),
    ):
        queue.put_nowait(item)
    return queue


async def test_queued_events_leave_in_one_write() -> None:
    queue = queued_hello_stream(maxsize=8)
    writes = [write async for write in generate_streaming_response(request(stream=True), queue)]
    assert len(writes) == 1 and writes[0].count("data: ") == 4 and writes[0].endswith("data: [DONE]\n\n")


async def test_streaming_response_is_sse_with_data_fields_and_done() -> None:
    queue = queued_hello_stream(maxsize=4)
    events = await collect(request(stream=True), queue)
    assert events[-1] == "data: [DONE]\n\n"
    assert all(event.startswith("data: ") and event.endswith("\n\n") for event in events)
    chunks = [json.loads(event[6:]) for event in events[:-1]]
    assert {chunk["id"] for chunk in chunks} == {"chatcmpl-x"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[1]["choices"][0]["delta"] == {"content": "hello", "name": "agent"}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert all(chunk["usage"] is None for chunk in chunks)


async def test_streaming_response_sends_keepalive_comments_while_waiting() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2)

    async def late_end() -> None:
        await asyncio.sleep(0.25)
        await queue.put(StreamEnd())

    feeder = asyncio.create_task(late_end())
    events = await collect(request(stream=True), queue, keepalive_s=0.05)
    await feeder
    assert events[0] == ": ping\n\n" and events[-1] == "data: [DONE]\n\n"


async def test_streaming_failure_after_first_byte_is_an_error_event_without_done() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
    queue.put_nowait(translator().start())
    queue.put_nowait(StreamFailure(OpenAIError(502, "The upstream model failed to answer.")))
    events = await collect(request(stream=True), queue)
    assert len(events) == 2 and "[DONE]" not in "".join(events)
    assert json.loads(events[1][6:])["error"]["message"] == "The upstream model failed to answer."


async def test_streaming_handle_response_failure_becomes_error_event_and_metric() -> None:
    ctx = context()
    observer = ctx.metrics.request("demo-team", True)
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
    queue.put_nowait({"secret": "a bare dict is not a chunk"})
    events = await collect(request(stream=True), queue, observer=observer, deadline_s=5)
    error = json.loads(events[-1][6:])["error"]
    assert error["type"] == "server_error" and "bare dict" not in error["message"]
    assert counter(ctx.metrics, "autogen_errors_total", function="handle_response") == 1


async def test_streaming_deadline_ends_with_a_timeout_event() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
    events = await collect(request(stream=True), queue, keepalive_s=0.05, deadline_s=0.2)
    assert json.loads(events[-1][6:])["error"]["code"] == "timeout"


# --- serve_autogen ------------------------------------------------------------------------------
async def test_serve_autogen_non_streaming_returns_a_chat_completion() -> None:
    ctx = context()
    body = await serve_autogen(request(), ctx)
    assert isinstance(body, dict)
    assert body["choices"][0]["message"]["name"] == "reviewer"
    assert "TERMINATE" not in body["choices"][0]["message"]["content"]
    assert (
        counter(ctx.metrics, "autogen_requests_total", model="demo-team", stream="false", outcome="ok") == 1
    )
    assert ctx.slots.in_use == 0


async def test_serve_autogen_streaming_returns_a_streaming_response() -> None:
    ctx = context()
    response = await serve_autogen(request(stream=True), ctx)
    assert isinstance(response, StreamingResponse)
    assert response.media_type == "text/event-stream"
    events = [event async for event in response.body_iterator]
    assert events[-1].endswith("data: [DONE]\n\n")
    await response._on_close()  # type: ignore[attr-defined]
    assert ctx.slots.in_use == 0


async def test_serve_autogen_unknown_model_is_404() -> None:
    with pytest.raises(OpenAIError) as caught:
        await serve_autogen(request(model="nope\x1b[31m"), context())
    assert caught.value.status_code == 404 and "\x1b" not in caught.value.message


async def test_serve_autogen_refuses_over_capacity_at_once() -> None:
    ctx = context(max_concurrent_workflows=1)
    assert ctx.slots.try_acquire()
    with pytest.raises(OpenAIError) as caught:
        await serve_autogen(request(), ctx)
    assert caught.value.status_code == 503 and caught.value.headers == {"Retry-After": "1"}


async def test_serve_autogen_autogen_failure_is_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    ctx = context()
    ctx.registry.register_factory("broken", lambda: _FailingAgent(), description="fails", agent_names=("x",))
    with pytest.raises(CoreFunctionError) as caught:
        await serve_autogen(request(model="broken"), ctx)
    assert caught.value.function == "serve_autogen" and "internal detail" not in caught.value.message
    assert "workflow failed" in caplog.text
    assert ctx.slots.in_use == 0


class _FailingAgent:
    """A stand-in runner whose run fails: AutoGen raising inside a team."""

    name = "x"

    async def run(self, **_: Any) -> TaskResult:
        raise RuntimeError("internal detail that must not leak")

    async def run_stream(self, **_: Any) -> Any:
        raise RuntimeError("internal detail that must not leak")
        yield  # pragma: no cover


async def test_serve_autogen_failure_mid_stream_ends_with_error_event() -> None:
    ctx = context()
    ctx.registry.register_factory("broken", lambda: _FailingAgent(), description="fails", agent_names=("x",))
    response = await serve_autogen(request(model="broken", stream=True), ctx)
    assert isinstance(response, StreamingResponse)
    events = [event async for event in response.body_iterator]
    await response._on_close()  # type: ignore[attr-defined]
    assert events[0].startswith("data: ") and "role" in events[0]
    error = json.loads(events[-1][6:])["error"]
    assert error["type"] == "server_error" and "internal detail" not in json.dumps(error)
    assert counter(ctx.metrics, "autogen_errors_total", function="serve_autogen") == 1


async def test_serve_autogen_deadline_is_a_504() -> None:
    ctx = context(workflow_timeout_s=0.2, demo_llm_ttft_ms=2000)
    with pytest.raises(OpenAIError) as caught:
        await serve_autogen(request(model="echo"), ctx)
    assert caught.value.status_code == 504
    assert (
        counter(ctx.metrics, "autogen_requests_total", model="echo", stream="false", outcome="timeout") == 1
    )


async def test_flush_interval_groups_tokens_but_sends_the_first_at_once() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
    tr = translator()

    async def produce() -> None:
        await queue.put(tr.start())
        for index in range(20):
            for chunk in tr.on_token("agent", f"t{index} "):
                await queue.put(chunk)
            await asyncio.sleep(0.005)
        await queue.put(tr.finish(None))
        await queue.put(StreamEnd())

    producer = asyncio.create_task(produce())
    writes = []
    async for write in generate_streaming_response(request(stream=True), queue, flush_interval_s=0.05):
        writes.append(write)
    await producer
    text = "".join(writes)
    assert text.count('"content":"t') == 20 and text.endswith("data: [DONE]\n\n")
    assert '"content":"t0 "' in writes[0] + writes[1]  # the first token is not held back
    assert len(writes) < 10  # ~100 ms of tokens in 50 ms batches, not 20 writes
