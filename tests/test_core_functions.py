"""The four core functions, success and failure paths, called directly."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

import pytest
from autogen_agentchat.base import TaskResult
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, field_serializer

from service.autogen_server import (
    create_non_streaming_response,
    encode_chunk,
    generate_streaming_response,
    handle_response,
    serve_autogen,
)
from service.contract.chat import ChatMessage, Input, Output
from service.contract.errors import OpenAIError
from service.encoders.chat_completions import NO_ANSWER_MESSAGE, ChatStreamEncoder
from service.observability.metrics import ServiceMetrics
from service.protection.capacity import WorkflowSlots
from service.runs.events import (
    AgentTurnEnded,
    AgentTurnStarted,
    FailureKind,
    FinalAnswer,
    ModelUsage,
    RunEnded,
    RunEndReason,
    RunEvent,
    RunStarted,
    TextDelta,
    Usage,
)
from service.serving.context import ServingContext
from service.serving.errors import CoreFunctionError
from service.workflows.registry import WorkflowRegistry
from tests.helpers.app import make_settings


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
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


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
def finished_run(
    *texts: tuple[str, str], answer: tuple[str, str] | None = None, **ended: Any
) -> list[RunEvent]:
    """The events of a finished run in which each (agent, text) is a turn."""
    agents = tuple(agent for agent, _ in texts)
    events: list[RunEvent] = [RunStarted("run", "m", agents)]
    for agent, text in texts:
        events += [AgentTurnStarted(agent), TextDelta(agent, text), AgentTurnEnded(agent)]
    if answer is not None:
        events.append(FinalAnswer(*answer))
    usage = Usage(prompt_tokens=20, completion_tokens=10, calls=2)
    events.append(RunEnded(ended.pop("reason", RunEndReason.COMPLETED), usage, **ended))
    return events


def non_streaming(events: list[RunEvent], mode: Any = "reasoning") -> dict[str, Any]:
    return create_non_streaming_response(
        events, "demo-team", completion_id="chatcmpl-x", created=1, mode=mode
    )


def test_non_streaming_response_is_the_answer_with_the_activity_apart() -> None:
    events = finished_run(
        ("planner", "plan"), ("reviewer", "The answer."), answer=("reviewer", "The answer.")
    )
    body = non_streaming(events)
    message = body["choices"][0]["message"]
    assert message["content"] == "The answer." and message["name"] == "reviewer"
    assert (
        message["reasoning_content"]
        == message["reasoning"]
        == "**planner:** plan\n\n**reviewer:** The answer."
    )
    assert body["choices"][0]["finish_reason"] == "stop" and body["final_answer_agent"] == "reviewer"
    assert body["usage"] == {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    assert body["id"] == "chatcmpl-x" and body["object"] == "chat.completion"


def test_non_streaming_response_in_content_mode_is_the_transcript() -> None:
    events = finished_run(
        ("planner", "plan"), ("reviewer", "The answer."), answer=("reviewer", "The answer.")
    )
    message = non_streaming(events, mode="content")["choices"][0]["message"]
    assert message["content"] == "**planner:** plan\n\n**reviewer:** The answer."
    assert "reasoning_content" not in message


def test_non_streaming_response_without_an_answer_says_so() -> None:
    body = non_streaming(finished_run(answer=(None, "")))  # type: ignore[arg-type]
    assert body["choices"][0]["message"]["content"] == NO_ANSWER_MESSAGE
    assert body["choices"][0]["message"]["name"] is None


@pytest.mark.parametrize("reason", [RunEndReason.TURN_CAP, RunEndReason.TOKEN_CAP])
def test_non_streaming_response_is_cut_only_by_the_services_caps(reason: RunEndReason) -> None:
    body = non_streaming(finished_run(("a", "text"), answer=("a", "text"), reason=reason))
    assert body["choices"][0]["finish_reason"] == "length"


def test_non_streaming_response_formatting_failure_is_a_500() -> None:
    with pytest.raises(CoreFunctionError) as caught:
        non_streaming([RunStarted("run", "m", ())])  # a run that never ended
    assert caught.value.function == "create_non_streaming_response"


# --- generate_streaming_response ----------------------------------------------------------------
def encoder(mode: Any = "reasoning", include_usage: bool = False) -> ChatStreamEncoder:
    return ChatStreamEncoder(
        completion_id="chatcmpl-x",
        created=1,
        model="m",
        mode=mode,
        include_usage=include_usage,
        encode=encode_chunk,
    )


async def collect(inp: Input, queue: asyncio.Queue[Any], **kwargs: Any) -> list[str]:
    """The SSE events, however they were grouped into writes."""
    kwargs.setdefault("encoder", encoder())
    writes = [write async for write in generate_streaming_response(inp, queue, **kwargs)]
    return [event + "\n\n" for event in "".join(writes).split("\n\n") if event]


def queued(events: list[RunEvent], maxsize: int = 64) -> asyncio.Queue[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=maxsize)
    for event in events:
        queue.put_nowait(event)
    return queue


def hello_run() -> list[RunEvent]:
    """A single agent that answers "hello" as it streams."""
    return [
        RunStarted("run", "m", ("agent",), live_answer_agent="agent"),
        AgentTurnStarted("agent"),
        TextDelta("agent", "hello"),
        ModelUsage("agent", "embedded", 3, 1),
        AgentTurnEnded("agent"),
        FinalAnswer("agent", "hello"),
        RunEnded(RunEndReason.COMPLETED, Usage(3, 1, 1)),
    ]


async def test_queued_events_leave_in_one_write() -> None:
    writes = [
        write
        async for write in generate_streaming_response(request(stream=True), queued(hello_run()), encoder())
    ]
    assert len(writes) == 1 and writes[0].count("data: ") == 4 and writes[0].endswith("data: [DONE]\n\n")


async def test_streaming_response_is_sse_with_data_fields_and_done() -> None:
    events = await collect(request(stream=True), queued(hello_run(), maxsize=8))
    assert events[-1] == "data: [DONE]\n\n"
    assert all(event.startswith("data: ") and event.endswith("\n\n") for event in events)
    chunks = [json.loads(event[6:]) for event in events[:-1]]
    assert {chunk["id"] for chunk in chunks} == {"chatcmpl-x"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "hello", "name": "agent"}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[-1]["final_answer_agent"] == "agent"
    assert all(chunk["usage"] is None for chunk in chunks)


async def test_streaming_response_sends_keepalive_comments_while_waiting() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2)

    async def late_end() -> None:
        await asyncio.sleep(0.25)
        await queue.put(RunEnded(RunEndReason.COMPLETED))

    feeder = asyncio.create_task(late_end())
    events = await collect(request(stream=True), queue, keepalive_s=0.05)
    await feeder
    assert events[0] == ": ping\n\n" and events[-1] == "data: [DONE]\n\n"


async def test_streaming_failure_after_first_byte_is_an_error_event_without_done() -> None:
    run = [RunStarted("run", "m", ("a",)), RunEnded(RunEndReason.FAILED, failure=FailureKind.UPSTREAM_ERROR)]
    events = await collect(request(stream=True), queued(run))
    assert len(events) == 2 and "[DONE]" not in "".join(events)
    assert json.loads(events[1][6:])["error"]["message"] == "The upstream model failed to answer."


async def test_streaming_handle_response_failure_becomes_error_event_and_metric() -> None:
    ctx = context()
    observer = ctx.metrics.request("demo-team", True)

    def broken(chunk: Any) -> str:
        return encode_chunk({"secret": "a bare dict is not a chunk"})  # type: ignore[arg-type]

    bad = ChatStreamEncoder(
        completion_id="c", created=1, model="m", mode="reasoning", include_usage=False, encode=broken
    )
    events = await collect(
        request(stream=True), queued(hello_run()), encoder=bad, observer=observer, deadline_s=5
    )
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


async def test_serve_autogen_failure_before_the_first_event_gets_its_status() -> None:
    ctx = context()
    ctx.registry.register_factory("broken", lambda: _FailingAgent(), description="fails", agent_names=("x",))
    with pytest.raises(CoreFunctionError) as caught:
        await serve_autogen(request(model="broken", stream=True), ctx)
    assert caught.value.status_code == 500 and "internal detail" not in caught.value.message
    # "broken" was registered after the metrics were made: its label is "unknown".
    outcome = {"model": "unknown", "stream": "true", "outcome": "server_error"}
    assert counter(ctx.metrics, "autogen_requests_total", **outcome) == 1
    assert ctx.slots.in_use == 0


def failing_echo(after_tokens: int) -> dict[str, Any]:
    """The built-in `echo`, its embedded model failing after a few streamed tokens."""
    document = json.loads(resources.files("service.workflows").joinpath("builtin/echo.json").read_text())
    document["config"]["model_client"]["config"]["fail_after_tokens"] = after_tokens
    return document


async def test_serve_autogen_failure_mid_stream_ends_with_error_event() -> None:
    ctx = context()
    ctx.registry.register_component("flaky", failing_echo(after_tokens=3))
    response = await serve_autogen(
        Input(
            model="flaky", messages=[ChatMessage(role="user", content="one two three four five")], stream=True
        ),
        ctx,
    )
    assert isinstance(response, StreamingResponse)
    events = [event async for event in response.body_iterator]
    await response._on_close()  # type: ignore[attr-defined]
    text = "".join(events)
    assert '"content":"one"' in text  # the answer streamed before the failure
    error = json.loads(text.strip().split("\n\n")[-1][6:])["error"]
    assert error["type"] == "server_error" and "injected" not in json.dumps(error)
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

    async def produce() -> None:
        await queue.put(RunStarted("run", "m", ("agent",), live_answer_agent="agent"))
        await queue.put(AgentTurnStarted("agent"))
        for index in range(20):
            await queue.put(TextDelta("agent", f"t{index} "))
            await asyncio.sleep(0.005)
        await queue.put(AgentTurnEnded("agent"))
        await queue.put(FinalAnswer("agent", "..."))
        await queue.put(RunEnded(RunEndReason.COMPLETED))

    producer = asyncio.create_task(produce())
    writes = []
    async for write in generate_streaming_response(
        request(stream=True), queue, encoder(), flush_interval_s=0.05
    ):
        writes.append(write)
    await producer
    text = "".join(writes)
    assert text.count('"content":"t') == 20 and text.endswith("data: [DONE]\n\n")
    assert '"content":"t0 "' in writes[0] + writes[1]  # the first token is not held back
    assert len(writes) < 10  # ~100 ms of tokens in 50 ms batches, not 20 writes
