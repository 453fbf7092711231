"""The Responses and Conversations API through the official `openai` SDK (real app, ASGI transport):
the wire format, streamed and not, stored responses and conversations, continuations from the team's
saved state, human input, ownership, bounds and errors. (Live servers: `test_responses_live.py`.)"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from autogen_agentchat.agents import AssistantAgent, UserProxyAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat

from service.app import create_app
from service.state import decode_state, open_state_store
from service.workflows.demo_client import DemoChatCompletionClient
from service.workflows.registry import WorkflowRegistry
from tests.helpers.app import make_settings, running_app
from tests.helpers.redis_server import RedisServer, requires_redis
from tests.helpers.server import free_port

QUESTION = "What is AutoGen?"
KEY_A, KEY_B = "sk-resp-alpha", "sk-resp-bravo"


@asynccontextmanager
async def service(tmp_path: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its state store in `tmp_path`, a user-proxy team and a slow echo registered."""
    overrides.setdefault("data_dir", tmp_path / "data")
    settings = make_settings(**overrides)
    registry = WorkflowRegistry(settings)
    team = RoundRobinGroupChat(
        [
            AssistantAgent("assistant", model_client=DemoChatCompletionClient(role="assistant")),
            UserProxyAgent("person"),
        ],
        termination_condition=MaxMessageTermination(6),
    )
    registry.register_component("proxy-team", team.dump_component())
    slow = AssistantAgent(
        "slow", model_client=DemoChatCompletionClient(role="echo", token_ms=100), model_client_stream=True
    )
    registry.register_component("slow", slow.dump_component())
    async with running_app(create_app(settings, registry=registry)) as http:
        yield http


def sdk(http: httpx.AsyncClient, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with service(tmp_path, direct_model="on") as client:
        yield client


def extra(model: Any) -> dict[str, Any]:
    return dict(model.model_extra or {})


async def raw_stream(http: httpx.AsyncClient, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every SSE event of a streamed response, as sent."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


# ------------------------------------------------------------------------------------ wire format
async def test_a_response_has_the_answer_as_a_message_and_the_work_as_reasoning(
    http: httpx.AsyncClient,
) -> None:
    client = sdk(http)
    response = await client.responses.create(model="demo-team", input=QUESTION)
    assert (
        response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    )
    assert response.model == "demo-team" and response.error is None and response.incomplete_details is None
    assert [item.type for item in response.output] == ["reasoning"] * 3 + ["message"]
    message = response.output[-1]
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.id.startswith("msg_") and message.phase == "final_answer"
    assert [part.type for part in message.content] == ["output_text"]
    assert response.output_text.startswith("Review:") and "TERMINATE" not in response.output_text
    reasoning = [item for item in response.output if item.type == "reasoning"]
    assert [extra(item)["agent"] for item in reasoning] == ["planner", "writer", "reviewer"]
    assert reasoning[0].summary[0].text.startswith("**planner:** Plan for")
    assert reasoning[0].summary[0].type == "summary_text" and reasoning[0].id.startswith("rs_")
    assert extra(reasoning[0])["activity"] == [{"type": "agent_turn", "agent": "planner"}]
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert extra(response)["final_answer_agent"] == "reviewer" and "input_required" not in extra(response)
    # The same answer as a chat completion of the same question.
    chat = await client.chat.completions.create(
        model="demo-team", messages=[{"role": "user", "content": QUESTION}]
    )
    assert chat.choices[0].message.content == response.output_text


async def test_the_stream_sends_the_standard_events_in_order(http: httpx.AsyncClient) -> None:
    events = await raw_stream(http, {"model": "demo-team", "input": QUESTION})
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    kinds = [data["type"] for _, data in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    created = events[0][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    final = events[-1][1]["response"]
    assert final["id"] == created["id"] and final["status"] == "completed"
    for index, item in enumerate(final["output"]):
        mine = [data for _, data in events if data.get("output_index") == index]
        kinds_of_item = [data["type"] for data in mine]
        assert (
            kinds_of_item[0] == "response.output_item.added"
            and kinds_of_item[-1] == "response.output_item.done"
        )
        assert mine[-1]["item"] == item
        if item["type"] == "reasoning":
            assert kinds_of_item[1] == "response.reasoning_summary_part.added"
            assert kinds_of_item[-4:-1] == [
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
            ]
            deltas = "".join(d["delta"] for d in mine if d["type"] == "response.reasoning_summary_text.delta")
            assert deltas == item["summary"][0]["text"] == mine[-3]["text"]
        else:
            assert kinds_of_item[1] == "response.content_part.added"
            assert kinds_of_item[-3:-1] == ["response.output_text.done", "response.content_part.done"]
            deltas = "".join(d["delta"] for d in mine if d["type"] == "response.output_text.delta")
            assert deltas == item["content"][0]["text"] == mine[-3]["text"]
    assert not any(item["type"] == "function_call" for item in final["output"])
    # Streamed and not: the same items.
    whole = (await http.post("/v1/responses", json={"model": "demo-team", "input": QUESTION})).json()
    assert [(i["type"], i.get("agent")) for i in whole["output"]] == [
        (i["type"], i.get("agent")) for i in final["output"]
    ]
    texts = [i["content"][0]["text"] for i in whole["output"] if i["type"] == "message"]
    assert texts == [i["content"][0]["text"] for i in final["output"] if i["type"] == "message"]


async def test_the_sdk_stream_helpers_rebuild_the_response(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    async with client.responses.stream(model="demo-team", input=QUESTION) as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text and final.output_text.startswith("Review:")
    events = [event async for event in await client.responses.create(model="echo", input="hi", stream=True)]
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "hi"


# ---------------------------------------------------------------------------------- continuations
async def test_a_continuation_resumes_the_team_from_its_saved_state(http: httpx.AsyncClient) -> None:
    client = sdk(http)  # the direct model (one agent) says how many turns its memory holds
    first = await client.responses.create(model="direct", input="first")
    assert first.output_text.startswith("Answer (turn 1)")
    second = await client.responses.create(model="direct", input="second", previous_response_id=first.id)
    assert second.output_text.startswith('Answer (turn 3): you asked "second"')
    assert second.previous_response_id == first.id
    third = await client.responses.create(model="direct", input="third", previous_response_id=second.id)
    assert third.output_text.startswith("Answer (turn 5)")
    fork = await client.responses.create(model="direct", input="again", previous_response_id=first.id)
    assert fork.output_text.startswith("Answer (turn 3)")  # a stored response can be continued again
    stateless = await client.responses.create(model="direct", input="alone")
    assert stateless.output_text.startswith("Answer (turn 1)")
    items = await client.responses.input_items.list(second.id)
    assert [(item.type, item.role, item.content[0].text) for item in items.data] == [
        ("message", "user", "second")
    ]
    team = await client.responses.create(model="demo-team", input=QUESTION)
    again = await client.responses.create(model="demo-team", input="And why?", previous_response_id=team.id)
    assert again.status == "completed" and 'answers "And why?"' in again.output_text


async def test_instructions_reach_the_team_once_unless_they_change(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    client = sdk(http)
    conversation = await client.conversations.create()
    for instructions in ("Be brief.", "Be brief.", "Be thorough."):
        await client.responses.create(
            model="direct", input="hi", instructions=instructions, conversation=conversation.id
        )
    store = await open_state_store(f"sqlite:///{tmp_path / 'data' / 'state.sqlite3'}", 60)
    try:
        data = await store.load_state(conversation.id)
    finally:
        await store.close()
    assert data is not None
    history = decode_state(data, 10_000_000)["history"]
    assert [m["content"] for m in history if m["type"] == "SystemMessage"] == ["Be brief.", "Be thorough."]
    assert sum(1 for m in history if m["type"] == "UserMessage") == 3


async def test_conversations_hold_items_and_their_teams_state(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    conversation = await client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "seeded"}], metadata={"topic": "t"}
    )
    assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "t"}
    first = await client.responses.create(model="direct", input="one", conversation=conversation.id)
    assert first.output_text.startswith("Answer (turn 2)")  # the seeded message and this one
    assert first.conversation is not None and first.conversation.id == conversation.id
    added = await client.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": "added"}]
    )
    assert [item.type for item in added.data] == ["message"]
    second = await client.responses.create(model="direct", input="two", conversation=conversation.id)
    assert second.output_text.startswith("Answer (turn 5)")  # + the answer, the added item, this one
    texts = []
    async for item in client.conversations.items.list(conversation.id, order="asc", limit=2):
        texts.append((item.type, getattr(item, "role", None), item.content[0].text if item.content else None))
    assert texts == [
        ("message", "user", "seeded"),
        ("message", "user", "one"),
        ("message", "assistant", first.output_text),
        ("message", "user", "added"),
        ("message", "user", "two"),
        ("message", "assistant", second.output_text),
    ]
    newest = await client.conversations.items.list(conversation.id, limit=1)
    assert newest.data[0].id == second.output[-1].id and newest.has_more
    item = await client.conversations.items.retrieve(newest.data[0].id, conversation_id=conversation.id)
    assert item.id == newest.data[0].id
    updated = await client.conversations.update(conversation.id, metadata={"topic": "u"})
    assert (
        (await client.conversations.retrieve(conversation.id)).metadata == {"topic": "u"} == updated.metadata
    )
    deleted = await client.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="direct", input="three", conversation=conversation.id)
    assert (await client.responses.retrieve(second.id)).id == second.id  # its responses stay


async def test_a_stateless_client_may_send_the_whole_history_back(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    first = await client.responses.create(model="direct", input="first")
    history = [
        {"role": "user", "content": "first"},
        *[item.model_dump(exclude_none=True) for item in first.output],  # the reasoning items too
        {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
    ]
    second = await client.responses.create(model="direct", input=history, store=False)  # type: ignore[arg-type]
    assert second.output_text.startswith("Answer (turn 3)")


# ---------------------------------------------------------------------------------- human input
async def test_a_user_proxy_question_completes_and_the_answer_resumes_the_team(
    http: httpx.AsyncClient,
) -> None:
    client = sdk(http)
    asked = await client.responses.create(model="proxy-team", input="Help me.")
    assert asked.status == "completed"
    required = extra(asked)["input_required"]
    assert required["agent"] == "person" and required["prompt"].startswith("Answer (turn 1)")
    assert asked.output_text == required["prompt"]
    answered = await client.responses.create(
        model="proxy-team", input="I am Bob", previous_response_id=asked.id
    )
    # The assistant's memory: the task, its reply, the person's answer (as the proxy's message).
    assert answered.output_text.startswith("Answer (turn 3)")  # then the person is asked again
    assert extra(answered)["input_required"] == {"agent": "person", "prompt": answered.output_text}
    with pytest.raises(openai.BadRequestError, match="waits for an answer"):
        await client.responses.create(
            model="proxy-team", input=[{"role": "developer", "content": "x"}], previous_response_id=asked.id
        )
    # Streamed, in a conversation.
    conversation = await client.conversations.create()
    events = await raw_stream(
        http, {"model": "proxy-team", "input": "Help me.", "conversation": conversation.id}
    )
    final = events[-1][1]["response"]
    assert events[-1][0] == "response.completed" and final["input_required"]["agent"] == "person"
    resumed = await client.responses.create(
        model="proxy-team", input="I am Bob", conversation=conversation.id
    )
    assert extra(resumed)["input_required"]["prompt"].startswith("Answer (turn 3)")


# ----------------------------------------------------------------------------- storage and bounds
async def test_store_false_keeps_nothing(tmp_path: Path) -> None:
    async with service(tmp_path) as http:
        client = sdk(http)
        response = await client.responses.create(model="demo-team", input=QUESTION, store=False)
        assert response.status == "completed" and extra(response)["store"] is False
        events = await raw_stream(http, {"model": "echo", "input": "hi", "store": False})
        assert events[-1][0] == "response.completed"
        for response_id in (response.id, events[-1][1]["response"]["id"]):
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(response_id)
            with pytest.raises(openai.NotFoundError):
                await client.responses.create(model="echo", input="x", previous_response_id=response_id)
        with pytest.raises(openai.BadRequestError, match="store"):
            conversation = await client.conversations.create()
            await client.responses.create(model="echo", input="x", conversation=conversation.id, store=False)
    with sqlite3.connect(tmp_path / "data" / "state.sqlite3") as db:
        for table in ("responses", "states", "items"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,), table


async def test_store_false_alone_never_opens_the_store(tmp_path: Path) -> None:
    async with service(tmp_path) as http:
        response = await sdk(http).responses.create(model="echo", input="hi", store=False)
        assert response.output_text == "hi"
    assert not (tmp_path / "data").exists()


async def test_another_api_key_sees_nothing(tmp_path: Path) -> None:
    async with service(tmp_path, api_keys=f"{KEY_A},{KEY_B}") as http:
        alice, bob = sdk(http, KEY_A), sdk(http, KEY_B)
        response = await alice.responses.create(model="echo", input="mine")
        conversation = await alice.conversations.create(items=[{"role": "user", "content": "secret"}])
        unknown: dict[str, str] = {}
        for kind, call in (
            ("resp", lambda: bob.responses.retrieve("resp_" + "0" * 48)),
            ("conv", lambda: bob.conversations.retrieve("conv_" + "0" * 48)),
        ):
            with pytest.raises(openai.NotFoundError) as missing:
                await call()
            unknown[kind] = missing.value.message.split("'")[2]
        calls: list[Callable[[], Any]] = [
            lambda: bob.responses.retrieve(response.id),
            lambda: bob.responses.delete(response.id),
            lambda: bob.responses.input_items.list(response.id),
            lambda: bob.responses.create(model="echo", input="x", previous_response_id=response.id),
            lambda: bob.conversations.retrieve(conversation.id),
            lambda: bob.conversations.items.list(conversation.id),
            lambda: bob.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}]),
            lambda: bob.conversations.update(conversation.id, metadata={"a": "b"}),
            lambda: bob.conversations.delete(conversation.id),
            lambda: bob.responses.create(model="echo", input="x", conversation=conversation.id),
        ]
        for call in calls:
            with pytest.raises(openai.NotFoundError) as caught:
                await call()
            # Word for word the answer for an id that never existed: nothing is revealed.
            kind = caught.value.message.split("'")[1][:4]
            assert caught.value.message.split("'")[2] == unknown[kind]
        assert (await alice.responses.retrieve(response.id)).output_text == "mine"
        assert (await alice.conversations.retrieve(conversation.id)).id == conversation.id
        with pytest.raises(openai.AuthenticationError):
            await sdk(http, "wrong").responses.retrieve(response.id)


async def test_a_state_above_the_bound_fails_the_turn_and_stores_nothing(tmp_path: Path) -> None:
    async with service(tmp_path, state_max_bytes=4096) as http:
        client = sdk(http)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.responses.create(model="demo-team", input=QUESTION)
        assert caught.value.status_code == 413 and caught.value.code == "state_too_large"
        assert "STATE_MAX_BYTES" in caught.value.message
        events = await raw_stream(http, {"model": "demo-team", "input": QUESTION})
        name, data = events[-1]
        assert name == "response.failed" and data["response"]["error"]["code"] == "state_too_large"
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(data["response"]["id"])
        small = await client.responses.create(model="echo", input="fits")
        assert (await client.responses.retrieve(small.id)).id == small.id


async def test_an_expired_response_is_a_clear_404(tmp_path: Path) -> None:
    async with service(tmp_path, state_ttl_s=1) as http:
        client = sdk(http)
        response = await client.responses.create(model="echo", input="short-lived")
        for _ in range(50):
            try:
                await client.responses.retrieve(response.id)
            except openai.NotFoundError:
                break
            await asyncio.sleep(0.1)
        with pytest.raises(openai.NotFoundError) as caught:
            await client.responses.create(model="echo", input="more", previous_response_id=response.id)
        assert "expired" in caught.value.message and "1 seconds" in caught.value.message
        assert caught.value.code == "response_not_found" and caught.value.param == "previous_response_id"


async def conflict_while(
    http: httpx.AsyncClient, running: asyncio.Task[Any], attempt: Callable[[], Any]
) -> openai.ConflictError:
    """The 409 `attempt()` gets once `running` is under way (it holds the lock while its team runs)."""
    for _ in range(200):  # bounded: until the first turn's team is running
        assert not running.done(), running
        if "autogen_active_workflows 1.0" in (await http.get("/metrics")).text:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(openai.ConflictError) as caught:
        await attempt()
    assert not running.done()
    return caught.value


LONG = " ".join(["word"] * 40)  # 4 s of tokens from the slow echo


async def test_one_turn_at_a_time_per_conversation(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    conversation = await client.conversations.create()
    running = asyncio.create_task(
        client.responses.create(model="slow", input=LONG, conversation=conversation.id)
    )
    conflict = await conflict_while(
        http,
        running,
        lambda: client.responses.create(model="slow", input="meanwhile", conversation=conversation.id),
    )
    assert conflict.code == "conversation_busy" and conflict.status_code == 409
    with pytest.raises(openai.ConflictError):
        await client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}])
    first = await running
    assert first.status == "completed"
    after = await client.responses.create(model="slow", input="after", conversation=conversation.id)
    assert after.status == "completed"
    # Continuations of one stored response: one at a time too.
    stored = await client.responses.create(model="slow", input="alone")
    running = asyncio.create_task(
        client.responses.create(model="slow", input=LONG, previous_response_id=stored.id)
    )
    await conflict_while(
        http,
        running,
        lambda: client.responses.create(model="slow", input="meanwhile", previous_response_id=stored.id),
    )
    assert (await running).status == "completed"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (
            {"model": "echo", "input": "x", "previous_response_id": "resp_1", "conversation": "conv_1"},
            400,
            "not both",
        ),
        ({"model": "nope", "input": "x"}, 404, "does not exist"),
        ({"model": "echo", "input": ""}, 400, "user message"),
        (
            {"model": "echo", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
            400,
            "`message` items",
        ),
        (
            {
                "model": "echo",
                "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}],
            },
            400,
            "cannot see images",
        ),
        ({"model": "echo", "input": "x", "previous_response_id": "resp_missing"}, 404, "never existed"),
        ({"model": "echo", "input": "x", "conversation": {"id": "conv_missing"}}, 404, "never existed"),
        ({"model": "echo", "input": "x", "max_output_tokens": 0}, 400, "max_output_tokens"),
        ({"model": "echo", "input": "x", "metadata": {str(i): "v" for i in range(17)}}, 400, "metadata"),
    ],
)
async def test_invalid_requests_get_openai_errors(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, fragment: str
) -> None:
    response = await http.post("/v1/responses", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"]


async def test_a_continuation_with_another_model_is_refused(http: httpx.AsyncClient) -> None:
    client = sdk(http)
    first = await client.responses.create(model="echo", input="x")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="demo-team", input="y", previous_response_id=first.id)
    assert caught.value.code == "model_mismatch" and "'echo'" in caught.value.message


async def test_unused_fields_are_accepted_and_tools_are_not_offered(http: httpx.AsyncClient) -> None:
    body = {
        "model": "echo",
        "input": "hi",
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": "auto",
        "temperature": 0.3,
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "text"}},
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "something_new": {"x": 1},
    }
    response = await http.post("/v1/responses", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["tools"] == [] and response.json()["output"][-1]["content"][0]["text"] == "hi"


async def test_request_metrics_carry_the_api(http: httpx.AsyncClient) -> None:
    await sdk(http).responses.create(model="echo", input="hi")
    await http.post(
        "/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    )
    text = (await http.get("/metrics")).text
    assert 'autogen_requests_total{api="responses",model="echo",outcome="ok",stream="false"} 1.0' in text
    assert (
        'autogen_requests_total{api="chat_completions",model="echo",outcome="ok",stream="false"} 1.0' in text
    )


# ------------------------------------------------------------------------------- protections
async def test_capacity_deadline_and_failures_get_their_statuses(tmp_path: Path) -> None:
    async with service(tmp_path, max_concurrent_workflows=1, workflow_timeout_s=1.5) as http:
        client = sdk(http)
        running = asyncio.create_task(client.responses.create(model="slow", input=LONG))
        for _ in range(200):  # bounded: until the first run holds the only slot
            if "autogen_active_workflows 1.0" in (await http.get("/metrics")).text:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(openai.InternalServerError) as overloaded:  # 503
            await client.responses.create(model="echo", input="x")
        assert overloaded.value.status_code == 503 and overloaded.value.code == "overloaded"
        with pytest.raises(openai.APIStatusError) as late:  # the slow run passes its deadline
            await running
        assert late.value.status_code == 504 and late.value.code == "timeout"
        events = await raw_stream(http, {"model": "slow", "input": LONG})
        name, data = events[-1]
        assert name == "response.failed" and data["response"]["status"] == "failed"
        assert data["response"]["error"]["code"] == "timeout"
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(data["response"]["id"])  # a failed turn is not stored
        text = (await http.get("/metrics")).text
        assert (
            'autogen_requests_total{api="responses",model="slow",outcome="timeout",stream="true"} 1.0' in text
        )


async def test_a_failure_before_the_first_event_gets_its_status(tmp_path: Path) -> None:
    async with service(tmp_path) as http:
        faulty = AssistantAgent(
            "faulty", model_client=DemoChatCompletionClient(role="echo", fail_after_tokens=0)
        )
        http_app: Any = http._transport.app  # type: ignore[attr-defined]
        http_app.state.serving.registry.register_component("faulty", faulty.dump_component())
        for stream in (False, True):
            response = await http.post(
                "/v1/responses", json={"model": "faulty", "input": "x", "stream": stream}
            )
            assert response.status_code == 500, response.text
            assert response.json()["error"]["code"] == "internal_error"


async def test_rate_limit_and_drain_guard_the_responses_routes(tmp_path: Path) -> None:
    async with service(tmp_path, rate_limit="2/minute") as http:
        client = sdk(http)
        await client.responses.create(model="echo", input="one")
        await client.conversations.create()
        with pytest.raises(openai.RateLimitError) as limited:
            await client.responses.create(model="echo", input="three")
        assert limited.value.response.headers["retry-after"]
        text = (await http.get("/metrics")).text
        assert (
            'autogen_requests_total{api="responses",model="echo",outcome="rate_limited",stream="false"} 1.0'
            in text
        )
    async with service(tmp_path / "drain") as http:
        http._transport.app.state.lifecycle.start_draining()  # type: ignore[attr-defined]
        for method, path, body in (
            ("POST", "/v1/responses", {"model": "echo", "input": "x"}),
            ("GET", "/v1/responses/resp_x", None),
            ("POST", "/v1/conversations", {}),
        ):
            response = await http.request(method, path, json=body)
            assert response.status_code == 503 and response.json()["error"]["code"] == "shutting_down"


async def test_stored_objects_answer_503_while_the_state_store_cannot_be_reached(tmp_path: Path) -> None:
    """Every stored-object route turns an unreachable store into 503 `state_store_unavailable`
    (retry shortly), and chat completions keep working."""
    async with service(tmp_path, state_store_uri=f"redis://127.0.0.1:{free_port()}/0") as http:
        calls = [
            ("GET", "/v1/responses/resp_missing", None),
            ("DELETE", "/v1/responses/resp_missing", None),
            ("GET", "/v1/responses/resp_missing/input_items", None),
            ("POST", "/v1/conversations", {"items": [{"role": "user", "content": "hi"}]}),
            ("GET", "/v1/conversations/conv_missing", None),
            ("POST", "/v1/conversations/conv_missing", {"metadata": {"k": "v"}}),
            ("DELETE", "/v1/conversations/conv_missing", None),
            ("GET", "/v1/conversations/conv_missing/items", None),
            ("POST", "/v1/conversations/conv_missing/items", {"items": [{"role": "user", "content": "hi"}]}),
            ("GET", "/v1/conversations/conv_missing/items/msg_missing", None),
        ]
        for method, path, body in calls:
            response = await http.request(method, path, json=body)
            assert response.status_code == 503, (method, path, response.text)
            assert response.json()["error"]["code"] == "state_store_unavailable", (method, path)
            assert response.headers["retry-after"] == "1"
        chat = await http.post(
            "/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert chat.status_code == 200


@pytest.mark.parametrize(
    "stored",
    [
        b"garbage",
        b"z1" + b"not zlib",
        b"z1" + zlib.compress(b'["a JSON list"]'),
        b"z1" + zlib.compress(b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
        b"z1" + zlib.compress(b'{"history":"' + b"x" * 20_000_000 + b'"}', 9),
    ],
    ids=["garbage", "bad-zlib", "json-list", "deep-nesting", "zlib-bomb"],
)
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=requires_redis)])
async def test_corrupt_saved_state_is_a_409_never_a_500(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, stored: bytes
) -> None:
    overrides: dict[str, Any] = {"direct_model": "on", "state_max_bytes": 1_000_000}
    if backend == "redis":
        overrides["state_store_uri"] = request.getfixturevalue("redis_url")
    async with service(tmp_path, **overrides) as http:
        client = sdk(http)
        conversation = await client.conversations.create()
        await client.responses.create(model="direct", input="one", conversation=conversation.id)
        first = await client.responses.create(model="direct", input="alone")
        uri = overrides.get("state_store_uri") or f"sqlite:///{tmp_path / 'data' / 'state.sqlite3'}"
        store = await open_state_store(uri, 60)
        try:
            for key in (conversation.id, first.id):  # overwrite the saved states in place
                if backend == "redis":
                    await store.client.set(f"autogen:state:state:{key}", stored)  # type: ignore[attr-defined]
                else:
                    await store._call(  # type: ignore[attr-defined]
                        lambda key=key: store.db.execute(  # type: ignore[attr-defined]
                            "UPDATE states SET data = ? WHERE id = ?", (stored, key)
                        )
                    )
        finally:
            await store.close()
        for continuation in ({"conversation": conversation.id}, {"previous_response_id": first.id}):
            with pytest.raises(openai.ConflictError) as caught:
                await client.responses.create(model="direct", input="two", **continuation)
            assert caught.value.code == "state_incompatible"
        # The conversation's lock was released: a new conversation still works.
        fresh = await client.conversations.create()
        ok = await client.responses.create(model="direct", input="one", conversation=fresh.id)
        assert ok.status == "completed"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url
