"""The scripted fake LLM (`loadtests/scripted_llm.py`) against real clients.

The official `openai` SDK checks the wire format (stream helpers rebuild tool calls from their deltas),
autogen-ext's `OpenAIChatCompletionClient` checks what AgentChat sees (`CreateResult.thought`, usage), and
small real AgentChat teams show that scripts can drive them. No timed assertions: waits are bounded polls.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import HandoffTermination, MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import (
    HandoffMessage,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_agentchat.teams import MagenticOneGroupChat, RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import CreateResult, SystemMessage, UserMessage
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import ValidationError

from loadtests.scripted_llm import (
    MAGENTIC_FACTS_RE,
    MAGENTIC_FINAL_RE,
    MAGENTIC_LEDGER_RE,
    MAGENTIC_PLAN_RE,
    Fault,
    Match,
    Reply,
    Rule,
    ScriptedLLMThread,
    ToolCall,
    Usage,
    handoff,
    progress_ledger,
    rule,
    selector_rule,
    start_scripted_llm_process,
    start_scripted_llm_thread,
)
from service.app import create_app
from service.workflows.preparation import LLM_MODEL_INFO
from tests.helpers.app import make_settings, running_app

USER = [{"role": "user", "content": "hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMThread]:
    with start_scripted_llm_thread() as llm:
        yield llm


@pytest.fixture
def llm(server: ScriptedLLMThread) -> ScriptedLLMThread:
    """The module's fake, its record and counters cleared, back to its initial script."""
    server.reset()
    server.load_script({"default": "OK"})
    return server


def sdk(llm: ScriptedLLMThread, timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm.base_url, api_key="k", max_retries=0, timeout=timeout)


def model_client(llm: ScriptedLLMThread) -> OpenAIChatCompletionClient:
    """An autogen-ext client for the fake, told about the model what the service tells it."""
    return OpenAIChatCompletionClient(
        model="scripted", base_url=llm.base_url, api_key="k", max_retries=0, model_info=LLM_MODEL_INFO
    )


def raw_events(llm: ScriptedLLMThread, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON events of a streamed completion, as sent (before any SDK)."""
    events = []
    with httpx.stream(
        "POST", f"{llm.base_url}/chat/completions", json={"stream": True, **body}, timeout=30
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


def idle(llm: ScriptedLLMThread) -> dict[str, Any]:
    """Stats once nothing is in flight any more (bounded wait)."""
    return llm.wait_stats(lambda s: s["in_flight"] == 0 and s["open_streams"] == 0, timeout=5)


# ---------------------------------------------------------------------------------------------------------
# Wire format, with the openai SDK
# ---------------------------------------------------------------------------------------------------------
def test_text_streams_as_several_deltas_and_usage_only_in_the_last_chunk(llm: ScriptedLLMThread) -> None:
    llm.load_script([rule("The answer is forty two.", times=None)])
    chunks = list(
        sdk(llm).chat.completions.create(
            model="m", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert len({(c.id, c.created) for c in chunks}) == 1
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == ["The", " answer", " is", " forty", " two."]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 5

    no_usage = list(sdk(llm).chat.completions.create(model="m", messages=USER, stream=True))
    assert all(c.usage is None and c.choices for c in no_usage)
    reply = sdk(llm).chat.completions.create(model="m", messages=USER)
    assert reply.choices[0].message.content == "The answer is forty two."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert idle(llm)["completed"] == 3


def test_tool_call_deltas_are_split_like_openai_and_rebuilt_by_the_sdk(llm: ScriptedLLMThread) -> None:
    calls = [
        ToolCall(name="get_weather", arguments={"city": "Paris", "unit": "celsius"}),
        ToolCall(name="get_time", arguments={"zone": "Europe/Paris"}, id="call_clock"),
    ]
    llm.load_script([rule(Reply(text="Let me check.", tool_calls=calls, argument_chunk=5), times=None)])
    body = {"model": "m", "messages": USER, "tools": [WEATHER_TOOL, CLOCK_TOOL]}
    events = raw_events(llm, body)
    deltas = [e["choices"][0]["delta"] for e in events]
    assert deltas[0] == {"role": "assistant", "content": ""}
    tool_deltas = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert not any("content" in d for d in deltas if "tool_calls" in d)  # text first, then tool calls
    headers = [t for t in tool_deltas if "id" in t]
    assert headers == [
        {
            "index": 0,
            "id": "call_0_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {
            "index": 1,
            "id": "call_clock",
            "type": "function",
            "function": {"name": "get_time", "arguments": ""},
        },
    ]
    fragments = [t for t in tool_deltas if "id" not in t]
    assert all(set(t) == {"index", "function"} and set(t["function"]) == {"arguments"} for t in fragments)
    assert len([t for t in fragments if t["index"] == 0]) > 2  # the arguments arrive in pieces
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"

    with sdk(llm).chat.completions.stream(**body) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me check."
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    rebuilt = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
    assert rebuilt == [
        ("call_1_0", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("call_clock", "get_time", {"zone": "Europe/Paris"}),
    ]
    plain = sdk(llm).chat.completions.create(**body).choices[0]
    assert plain.finish_reason == "tool_calls" and plain.message.content == "Let me check."
    assert [c.function.arguments for c in plain.message.tool_calls or []] == [
        '{"city":"Paris","unit":"celsius"}',
        '{"zone":"Europe/Paris"}',
    ]


def test_tool_calls_alone_have_null_content(llm: ScriptedLLMThread) -> None:
    llm.load_script([rule(Reply(tool_calls=[handoff("Planner")]), times=None)])
    events = raw_events(llm, {"model": "m", "messages": USER})
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    header = events[1]["choices"][0]["delta"]["tool_calls"][0]
    assert header["function"]["name"] == "transfer_to_planner"
    message = sdk(llm).chat.completions.create(model="m", messages=USER).choices[0].message
    assert message.content is None
    assert message.tool_calls is not None and message.tool_calls[0].function.arguments == "{}"


def test_max_tokens_cuts_the_reply_with_finish_reason_length(llm: ScriptedLLMThread) -> None:
    llm.load_script([rule("one two three four five six", times=None)])
    client = sdk(llm)
    short = client.chat.completions.create(model="m", messages=USER, max_tokens=2)
    assert short.choices[0].message.content == "one two" and short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 2
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=USER,
            stream=True,
            max_completion_tokens=3,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert [r["max_tokens"] for r in llm.requests()] == [2, 3]


def test_explicit_usage_finish_reason_json_and_reasoning(llm: ScriptedLLMThread) -> None:
    ledger = {"next_speaker": {"reason": "r", "answer": "coder"}}
    llm.load_script(
        [
            rule(Reply(json=ledger, usage=Usage(prompt_tokens=1000, completion_tokens=7)), json=True),
            rule(Reply(text="cut", finish_reason="length")),
            rule(Reply(reasoning="Thinking hard.", text="Done.")),
        ]
    )
    client = sdk(llm)
    as_json = client.chat.completions.create(
        model="m", messages=USER, response_format={"type": "json_object"}
    )
    assert json.loads(as_json.choices[0].message.content or "") == ledger
    assert as_json.usage is not None
    assert (as_json.usage.prompt_tokens, as_json.usage.completion_tokens, as_json.usage.total_tokens) == (
        1000,
        7,
        1007,
    )
    assert client.chat.completions.create(model="m", messages=USER).choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks)
    assert reasoning == "Thinking hard."
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Done."


# ---------------------------------------------------------------------------------------------------------
# Matching, consumption, the record
# ---------------------------------------------------------------------------------------------------------
SYSTEM = {"role": "system", "content": "You are the planner. Plan well."}
FROM_CODER = {"role": "user", "content": "Here is the code.", "name": "coder"}
TOOL_RESULT = {"role": "tool", "content": "sunny, 21 C", "tool_call_id": "call_1"}


@pytest.mark.parametrize(
    ("match", "hit", "miss"),
    [
        ({"system": "the planner"}, {"messages": [SYSTEM, *USER]}, {"messages": USER}),
        ({"system_re": r"^You are the \w+\."}, {"messages": [SYSTEM, *USER]}, {"messages": [FROM_CODER]}),
        ({"last_re": r"code\.$"}, {"messages": [*USER, FROM_CODER]}, {"messages": [FROM_CODER, *USER]}),
        ({"any_re": "Plan well"}, {"messages": [SYSTEM, *USER]}, {"messages": USER}),
        ({"last_role": "tool"}, {"messages": [*USER, TOOL_RESULT]}, {"messages": USER}),
        ({"last_name": "coder"}, {"messages": [*USER, FROM_CODER]}, {"messages": [FROM_CODER, *USER]}),
        ({"has_name": "coder"}, {"messages": [FROM_CODER, *USER]}, {"messages": USER}),
        ({"tools": True}, {"messages": USER, "tools": [CLOCK_TOOL]}, {"messages": USER}),
        ({"tools": False}, {"messages": USER}, {"messages": USER, "tools": [CLOCK_TOOL]}),
        (
            {"tool_names": "get_weather"},
            {"messages": USER, "tools": [CLOCK_TOOL, WEATHER_TOOL]},
            {"messages": USER, "tools": [CLOCK_TOOL]},
        ),
        (
            {"json": True},
            {"messages": USER, "response_format": {"type": "json_object"}},
            {"messages": USER, "response_format": {"type": "text"}},
        ),
        ({"stream": True}, {"messages": USER, "stream": True}, {"messages": USER}),
        ({"model": "gpt-x"}, {"messages": USER, "model": "gpt-x"}, {"messages": USER}),
        ({"call": [1]}, None, {"messages": USER}),  # the 2nd call matches, the first did not
    ],
)
def test_each_matcher_selects_its_requests(
    llm: ScriptedLLMThread, match: dict[str, Any], hit: dict[str, Any] | None, miss: dict[str, Any]
) -> None:
    llm.load_script({"rules": [{"match": match, "reply": "matched", "times": None}], "default": "fallback"})

    def ask(body: dict[str, Any]) -> str:
        if body.get("stream"):
            return "".join(e["choices"][0]["delta"].get("content") or "" for e in raw_events(llm, body))
        response = httpx.post(f"{llm.base_url}/chat/completions", json={"model": "m", **body}, timeout=10)
        assert response.status_code == 200, response.text
        content: str = response.json()["choices"][0]["message"]["content"]
        return content

    assert ask(miss) == "fallback"
    assert ask(hit or miss) == "matched"
    assert [r["rule"] for r in llm.requests()] == [None, 0]


def test_rules_answer_in_order_are_consumed_and_unmatched_requests_fail(llm: ScriptedLLMThread) -> None:
    llm.load_script(
        [
            Rule(match=Match(system="planner"), reply=Reply(text="first plan"), label="plan 1"),
            Rule(match=Match(system="planner"), reply=Reply(text="second plan"), times=2),
            Rule(match=Match(system="critic"), reply=Reply(text="never asked")),
        ]
    )
    client = sdk(llm)
    planner = [SYSTEM, *USER]
    answers = [
        client.chat.completions.create(model="m", messages=planner).choices[0].message.content for _ in "abc"
    ]
    assert answers == ["first plan", "second plan", "second plan"]
    with pytest.raises(openai.BadRequestError, match="no rule matches call 3"):
        client.chat.completions.create(model="m", messages=planner)
    assert [r["label"] for r in llm.unused_rules()] == [None]
    assert llm.script_state()["rules"][1]["used"] == 2
    stats = llm.stats()
    assert stats["unmatched"] == 1 and stats["completed"] == 3
    assert [r["outcome"] for r in llm.requests()] == ["completed"] * 3 + ["unmatched"]
    assert llm.requests()[0]["label"] == "plan 1"


def test_the_record_holds_what_was_asked_and_what_was_answered(llm: ScriptedLLMThread) -> None:
    llm.load_script(
        [rule(Reply(text="Checking.", tool_calls=[ToolCall(name="get_weather", arguments={"city": "Oslo"})]))]
    )
    sdk(llm).chat.completions.create(
        model="gpt-x",
        messages=[SYSTEM, *USER],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        parallel_tool_calls=False,
        max_tokens=100,
        stream=True,
        stream_options={"include_usage": True},
    ).close()
    idle(llm)
    [record] = llm.requests()
    assert record["method"] == "POST" and record["path"] == "/v1/chat/completions"
    assert record["messages"] == [SYSTEM, *USER] and record["model"] == "gpt-x" and record["stream"] is True
    assert record["tool_names"] == ["get_weather"] and record["tools"] == [WEATHER_TOOL]
    assert (record["tool_choice"], record["parallel_tool_calls"], record["max_tokens"]) == (
        "auto",
        False,
        100,
    )
    assert record["stream_options"] == {"include_usage": True} and record["body"]["model"] == "gpt-x"
    assert record["reply"]["content"] == "Checking."
    assert record["reply"]["tool_calls"] == [
        {"id": "call_0_0", "name": "get_weather", "arguments": '{"city":"Oslo"}'}
    ]
    assert (
        record["reply"]["finish_reason"] == "tool_calls" and record["reply"]["usage"]["completion_tokens"] > 2
    )
    llm.reset()
    assert llm.requests() == [] and llm.stats()["requests"] == 0


def test_a_bad_script_is_refused_with_the_reason(llm: ScriptedLLMThread) -> None:
    with pytest.raises(ValidationError, match="sytem"):
        llm.load_script([{"match": {"sytem": "planner"}, "reply": "x"}])
    with pytest.raises(ValidationError, match=r"text.*json"):
        Reply.model_validate({"text": "a", "json": {"b": 1}})
    refused = httpx.post(f"{llm.url}/script", json={"rules": [{"match": {"last_re": "("}, "reply": "x"}]})
    assert refused.status_code == 400 and "last_re" in refused.text


# ---------------------------------------------------------------------------------------------------------
# Faults and disconnects
# ---------------------------------------------------------------------------------------------------------
def test_http_fault_answers_the_status_before_any_byte(llm: ScriptedLLMThread) -> None:
    llm.load_script(
        [
            rule(Reply(fault=Fault(kind="http", status=429, headers={"retry-after": "7"}))),
            rule(Reply(fault=Fault(kind="http", status=503, message="overloaded"))),
        ]
    )
    with pytest.raises(openai.RateLimitError) as limited:
        sdk(llm).chat.completions.create(model="m", messages=USER, stream=True)
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.InternalServerError, match="overloaded"):
        sdk(llm).chat.completions.create(model="m", messages=USER)
    stats = llm.stats()
    assert stats["errors"] == 2 and stats["completed"] == 0 and stats["open_streams"] == 0


def test_error_event_mid_stream_raises_after_the_first_deltas(llm: ScriptedLLMThread) -> None:
    llm.load_script(
        [rule(Reply(text="a b c d e", fault=Fault(kind="error", after=2, message="model crashed")))]
    )
    received = []
    with pytest.raises(openai.APIError, match="model crashed"):
        for c in sdk(llm).chat.completions.create(model="m", messages=USER, stream=True):
            received.append(c.choices[0].delta.content or "")
    assert "".join(received) == "a b"
    stats = idle(llm)
    assert stats["errors"] == 1 and stats["completed"] == 0 and llm.requests()[0]["fault"] == "error"


def test_drop_closes_the_connection_mid_body_or_before_any_byte(llm: ScriptedLLMThread) -> None:
    llm.load_script(
        [
            rule(Reply(text="a b c", fault=Fault(kind="drop", after=1))),
            rule(Reply(fault=Fault(kind="drop"))),
        ]
    )
    received = []
    with pytest.raises(openai.APIConnectionError) as mid_body:
        for c in sdk(llm).chat.completions.create(model="m", messages=USER, stream=True):
            received.append(c.choices[0].delta.content)
    assert received == ["", "a"] and "incomplete chunked read" in str(mid_body.value.__cause__)
    with pytest.raises(openai.APIConnectionError) as no_response:
        sdk(llm).chat.completions.create(model="m", messages=USER)
    assert "without sending a response" in str(no_response.value.__cause__)
    assert idle(llm)["errors"] == 2


def test_garbage_lines_comments_pass_broken_json_breaks_the_client(llm: ScriptedLLMThread) -> None:
    llm.load_script(
        [
            rule(Reply(text="a b", fault=Fault(kind="garbage", after=1, lines=[": keep-alive", ": again"]))),
            rule(Reply(text="a b", fault=Fault(kind="garbage", after=1))),
        ]
    )
    tolerated = list(sdk(llm).chat.completions.create(model="m", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in tolerated) == "a b"
    with pytest.raises(json.JSONDecodeError):
        for _ in sdk(llm).chat.completions.create(model="m", messages=USER, stream=True):
            pass
    assert idle(llm)["errors"] == 2


def test_huge_single_chunk(llm: ScriptedLLMThread) -> None:
    size = 10_000_000
    llm.load_script([rule(Reply(text="start", fault=Fault(kind="huge", after=1, bytes=size)))])
    with httpx.stream(
        "POST", f"{llm.base_url}/chat/completions", json={"stream": True, "messages": USER}
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    contents = [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines]
    assert contents[:2] == ["", "start"] and len(contents[2]) == size  # one event holds it all
    assert json.loads(lines[-1][6:])["choices"][0]["finish_reason"] == "stop"


def test_hang_before_the_headers_lasts_until_the_client_gives_up(llm: ScriptedLLMThread) -> None:
    llm.load_script([rule(Reply(fault=Fault(kind="hang")))])
    with pytest.raises(openai.APITimeoutError):
        sdk(llm, timeout=0.5).chat.completions.create(model="m", messages=USER, stream=True)
    stats = idle(llm)
    assert stats["open_streams"] == 0 and stats["in_flight"] == 0 and stats["cancelled"] == 1
    assert llm.requests()[0]["outcome"] == "cancelled" and llm.requests()[0]["fault"] == "hang"


@pytest.mark.parametrize("fault", [None, Fault(kind="hang", after=2)])
def test_open_streams_drop_to_zero_when_the_client_leaves_mid_stream(
    llm: ScriptedLLMThread, fault: Fault | None
) -> None:
    llm.load_script([rule(Reply(text=" ".join(["word"] * 200), token_ms=20, fault=fault))])
    with httpx.stream(
        "POST", f"{llm.base_url}/chat/completions", json={"stream": True, "messages": USER}
    ) as r:
        lines = r.iter_lines()  # held: dropping a half-read iterator closes the connection
        for line in lines:
            if '"content":"word"' in line:
                break
        assert llm.stats()["open_streams"] == 1
        assert llm.requests()[0]["outcome"] == "running"
    stats = idle(llm)  # the client closed its connection on leaving the block
    assert (stats["open_streams"], stats["in_flight"], stats["cancelled"], stats["completed"]) == (0, 0, 1, 0)
    assert llm.requests()[0]["outcome"] == "cancelled"


def test_in_a_subprocess_with_a_script_file_format(tmp_path: Path) -> None:
    script = {"rules": [{"match": {"last_re": "ping"}, "reply": "pong", "times": None}]}
    with start_scripted_llm_process(script, log_path=tmp_path / "llm.log") as llm:
        client = openai.OpenAI(base_url=llm.base_url, api_key="k", max_retries=0, timeout=30)
        ping = [{"role": "user", "content": "ping"}]
        assert client.chat.completions.create(model="m", messages=ping).choices[0].message.content == "pong"
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=USER)
        assert [r["outcome"] for r in llm.requests()] == ["completed", "unmatched"]
        llm.reset()
        assert llm.stats()["requests"] == 0
        pid = llm.pid
    assert "no rule matches call 1" in (tmp_path / "llm.log").read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped on leaving the block


# ---------------------------------------------------------------------------------------------------------
# autogen-ext's OpenAIChatCompletionClient
# ---------------------------------------------------------------------------------------------------------
async def test_autogen_client_create_and_create_stream(llm: ScriptedLLMThread) -> None:
    weather = ToolCall(name="get_weather", arguments={"city": "Paris"})
    reply_with_tool = Reply(text="I will look it up.", tool_calls=[weather], usage=Usage(prompt_tokens=50))
    llm.load_script([rule("Hello there.", times=2), rule(reply_with_tool, times=2, tools=True)])
    client = model_client(llm)
    messages = [SystemMessage(content="You are the weather agent."), UserMessage(content="Hi", source="user")]

    def get_weather(city: str) -> str:
        return "sunny"

    tool = FunctionTool(get_weather, description="Weather of a city")
    try:
        text = await client.create(messages)
        assert text.content == "Hello there." and text.finish_reason == "stop"
        assert text.usage.completion_tokens == 2

        streamed: list[str | CreateResult] = [
            c async for c in client.create_stream(messages, include_usage=True)
        ]
        assert streamed[:-1] == ["Hello", " there."]
        final = streamed[-1]
        assert isinstance(final, CreateResult) and final.content == "Hello there."
        assert final.usage.completion_tokens == 2 and final.usage.prompt_tokens > 0

        called = await client.create(messages, tools=[tool])
        assert called.thought == "I will look it up." and called.finish_reason == "function_calls"
        assert called.content == [
            FunctionCall(id="call_2_0", name="get_weather", arguments='{"city":"Paris"}')
        ]
        assert called.usage.prompt_tokens == 50

        chunks = [c async for c in client.create_stream(messages, tools=[tool], include_usage=True)]
        result = chunks[-1]
        assert isinstance(result, CreateResult)
        assert "".join(c for c in chunks if isinstance(c, str)) == "I will look it up."
        assert result.thought == "I will look it up."
        assert result.content == [
            FunctionCall(id="call_3_0", name="get_weather", arguments='{"city":"Paris"}')
        ]
        assert result.usage.prompt_tokens == 50 and result.usage.completion_tokens > 0
    finally:
        await client.close()
    records = llm.requests()
    assert [r["stream"] for r in records] == [False, True, False, True]
    assert records[1]["stream_options"] == {"include_usage": True}
    assert records[2]["tool_names"] == ["get_weather"] and records[2]["tool_choice"] == "auto"
    assert records[0]["messages"][0] == {"role": "system", "content": "You are the weather agent."}
    assert records[0]["messages"][1] == {"role": "user", "content": "Hi", "name": "user"}


async def test_cancelling_an_autogen_stream_closes_the_upstream_stream(llm: ScriptedLLMThread) -> None:
    llm.load_script([rule(Reply(text="a b c", fault=Fault(kind="hang", after=1)))])
    client = model_client(llm)
    token = CancellationToken()
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in client.create_stream(
            [UserMessage(content="Hi", source="user")], cancellation_token=token
        ):
            first.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first.wait(), 10)
        async with asyncio.timeout(5):
            await llm.wait_stats_async(lambda s: s["open_streams"] == 1)
        token.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        task.cancel()
        await client.close()
    async with asyncio.timeout(2):  # the lead's bound for upstream calls dropped after a cancellation
        stats = await llm.wait_stats_async(lambda s: s["open_streams"] == 0)
    assert (stats["open_streams"], stats["in_flight"], stats["cancelled"]) == (0, 0, 1)


# ---------------------------------------------------------------------------------------------------------
# Real AgentChat teams driven by scripts
# ---------------------------------------------------------------------------------------------------------
async def test_round_robin_team_with_a_tool_agent(llm: ScriptedLLMThread) -> None:
    seen: list[str] = []

    def get_weather(city: str) -> str:
        seen.append(city)
        return f"Sunny in {city}, 21 C"

    llm.load_script(
        [
            Rule(
                label="weather agent calls its tool, saying why first",
                match=Match(system="weather agent", tools=True, tool_names=["get_weather"]),
                reply=Reply(
                    text="Let me check the weather.",
                    tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris"})],
                ),
            ),
            Rule(
                label="weather agent reflects on the tool result",
                match=Match(system="weather agent", tools=False, last_role="tool", last_re="Sunny in Paris"),
                reply=Reply(text="It is sunny in Paris.", token_ms=1),
            ),
            Rule(
                label="the reviewer ends the run",
                match=Match(system="reviewer", last_name="weather_agent"),
                reply="Looks right. TERMINATE",
            ),
        ]
    )
    client = model_client(llm)
    weather = AssistantAgent(
        "weather_agent",
        model_client=client,
        tools=[FunctionTool(get_weather, description="Weather of a city")],
        system_message="You are the weather agent.",
        reflect_on_tool_use=True,
        model_client_stream=True,
    )
    reviewer = AssistantAgent("reviewer", model_client=client, system_message="You are the reviewer.")
    team = RoundRobinGroupChat(
        [weather, reviewer],
        termination_condition=TextMentionTermination("TERMINATE", sources=["reviewer"])
        | MaxMessageTermination(8),
    )
    try:
        result = await team.run(task="What is the weather in Paris?")
    finally:
        await client.close()
    assert seen == ["Paris"]
    requests = [m for m in result.messages if isinstance(m, ToolCallRequestEvent)]
    assert [c.name for c in requests[0].content] == ["get_weather"]
    executed = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
    assert executed[0].content[0].content == "Sunny in Paris, 21 C"
    texts = [(m.source, m.content) for m in result.messages if isinstance(m, TextMessage)]
    assert texts[1:] == [("weather_agent", "It is sunny in Paris."), ("reviewer", "Looks right. TERMINATE")]
    assert llm.unused_rules() == []
    records = llm.requests()
    assert [r["label"] for r in records] == [
        "weather agent calls its tool, saying why first",
        "weather agent reflects on the tool result",
        "the reviewer ends the run",
    ]
    reflection = records[1]["messages"]
    assert reflection[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert reflection[-2]["content"] == "Let me check the weather."  # the thought went back as content
    assert reflection[-1] == {"role": "tool", "content": "Sunny in Paris, 21 C", "tool_call_id": "call_0_0"}


async def test_selector_group_chat_follows_the_scripted_selector(llm: ScriptedLLMThread) -> None:
    llm.load_script(
        [
            selector_rule("writer"),
            rule("A first draft.", system="You are the writer."),
            selector_rule("critic"),
            rule("Too short.", system="You are the critic."),
            selector_rule("writer"),
            rule("A longer draft. DONE", system="You are the writer."),
        ]
    )
    client = model_client(llm)
    agents = [
        AssistantAgent(
            name, model_client=client, description=f"the {name}", system_message=f"You are the {name}."
        )
        for name in ("critic", "writer", "editor")
    ]
    team = SelectorGroupChat(
        agents,
        model_client=client,
        termination_condition=TextMentionTermination("DONE", sources=["writer"]) | MaxMessageTermination(10),
    )
    try:
        result = await team.run(task="Write a haiku.")
    finally:
        await client.close()
    assert [m.source for m in result.messages] == ["user", "writer", "critic", "writer"]
    assert llm.unused_rules() == []
    selector_calls = [r for r in llm.requests() if r["label"] and r["label"].startswith("selector")]
    assert len(selector_calls) == 3
    prompt = selector_calls[1]["messages"][-1]["content"]  # family "unknown": the prompt is a user message
    assert "writer: A first draft." in prompt and "from ['critic', 'editor']" in prompt  # no repeated speaker


async def test_magentic_one_runs_on_scripted_ledgers(llm: ScriptedLLMThread) -> None:
    llm.load_script(
        [
            rule("1. GIVEN OR VERIFIED FACTS\n- none", last_re=MAGENTIC_FACTS_RE),
            rule("- ask the poet", last_re=MAGENTIC_PLAN_RE),
            rule(
                Reply(json=progress_ledger("poet", "Write one line.")), last_re=MAGENTIC_LEDGER_RE, json=True
            ),
            rule("Roses are red.", system="You are the poet."),
            rule(Reply(json=progress_ledger("poet", "", satisfied=True)), last_re=MAGENTIC_LEDGER_RE),
            rule("The poem: Roses are red.", last_re=MAGENTIC_FINAL_RE),
        ]
    )
    client = model_client(llm)
    poet = AssistantAgent(
        "poet", model_client=client, system_message="You are the poet.", description="a poet"
    )
    team = MagenticOneGroupChat([poet], model_client=client, max_turns=5)
    try:
        result = await team.run(task="Write a poem.")
    finally:
        await client.close()
    assert result.messages[-1].source == "MagenticOneOrchestrator"
    assert result.messages[-1].to_text() == "The poem: Roses are red."
    assert llm.unused_rules() == []
    ledger_calls = [r for r in llm.requests() if r["response_format"] == {"type": "json_object"}]
    assert len(ledger_calls) == 2


async def test_swarm_hands_off_between_agents_then_to_the_user(llm: ScriptedLLMThread) -> None:
    llm.load_script(
        [
            rule(Reply(text="Bob knows refunds.", tool_calls=[handoff("bob")]), system="You are Alice."),
            rule(Reply(tool_calls=[handoff("user")]), system="You are Bob.", tool_names=["transfer_to_user"]),
        ]
    )
    client = model_client(llm)
    alice = AssistantAgent("alice", model_client=client, handoffs=["bob"], system_message="You are Alice.")
    bob = AssistantAgent("bob", model_client=client, handoffs=["user"], system_message="You are Bob.")
    team = Swarm([alice, bob], termination_condition=HandoffTermination("user") | MaxMessageTermination(10))
    try:
        result = await team.run(task="I want a refund.")
    finally:
        await client.close()
    handoffs = [(m.source, m.target) for m in result.messages if isinstance(m, HandoffMessage)]
    assert handoffs == [("alice", "bob"), ("bob", "user")]
    assert llm.unused_rules() == []
    assert llm.requests()[0]["tool_names"] == ["transfer_to_bob"]


async def test_the_service_in_process_calls_the_scripted_llm(llm: ScriptedLLMThread) -> None:
    """The in-process pattern: the app on the test's event loop, the fake on its own thread."""
    llm.load_script(
        [
            rule("1. Name the capital.", system="You are the planner.", label="planner"),
            rule("The capital of France is Paris.", system="You are the writer.", last_name="planner"),
            rule("Paris. TERMINATE", system="You are the reviewer.", last_name="writer", label="reviewer"),
        ]
    )
    settings = make_settings(llm_base_url=llm.base_url, llm_api_key="sk-test", llm_model="scripted-model")
    async with running_app(create_app(settings)) as http:
        answer = await http.post(
            "/v1/chat/completions",
            json={"model": "demo-team", "messages": [{"role": "user", "content": "Capital of France?"}]},
        )
    assert answer.status_code == 200, answer.text
    assert "Paris" in answer.json()["choices"][0]["message"]["content"]
    assert llm.unused_rules() == []
    records = llm.requests()
    assert [r["model"] for r in records] == ["scripted-model"] * 3
    assert records[0]["messages"][-1]["content"] == "Capital of France?"
    assert records[2]["messages"][-1] == {
        "role": "user",
        "content": "The capital of France is Paris.",
        "name": "writer",
    }
