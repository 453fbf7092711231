"""The Responses API on real servers (gunicorn, 2 workers) through the official `openai` SDK and the
OpenAI Agents SDK, the teams' model clients against the scripted fake LLM in its own process.

Shown here: a continuation served by the other worker resumes the team from its saved state (the
embedded SQLite store and a real `redis-server`); the human-input round trip of a UserProxyAgent team
and of a Swarm that hands off to the user; another API key gets 404; `store: false` keeps nothing;
an expired state is a clear 404; two concurrent continuations get one 200 and one 409; a client that
goes away cancels the run and nothing of it is stored. No timed assertions: waits are bounded polls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from autogen_agentchat.agents import AssistantAgent, UserProxyAgent
from autogen_agentchat.conditions import HandoffTermination, MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import RoundRobinGroupChat, Swarm
from autogen_ext.models.openai import OpenAIChatCompletionClient

from loadtests.scripted_llm import (
    Reply,
    ScriptedLLMProcess,
    handoff,
    rule,
    start_scripted_llm_process,
)
from service.workflows.preparation import LLM_MODEL_INFO
from tests.helpers.probes import metric, wait_until
from tests.helpers.redis_server import RedisServer, requires_redis
from tests.helpers.server import ServiceProcess, start_service

KEY_A, KEY_B = "sk-live-alpha", "sk-live-bravo"
REVIEWER_ENDS = rule("Done. TERMINATE", system="You are the reviewer.", times=None)
SLOW_WORDS = " ".join(["thinking"] * 30)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedLLMProcess]:
    with start_scripted_llm_process(log_path=tmp_path_factory.mktemp("llm") / "scripted.log") as process:
        yield process


def workflow_files(directory: Path, base_url: str) -> Path:
    """A UserProxyAgent team and a Swarm that hands off to the user, as a user dumps them."""
    client = OpenAIChatCompletionClient(
        model="scripted", base_url=base_url, api_key="sk-live", max_retries=0, model_info=LLM_MODEL_INFO
    )
    greeter = AssistantAgent("assistant", model_client=client, system_message="You are the greeter.")
    proxy_team = RoundRobinGroupChat(
        [greeter, UserProxyAgent("user_proxy")],
        termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(6),
    )
    alice = AssistantAgent("alice", model_client=client, handoffs=["bob"], system_message="You are Alice.")
    bob = AssistantAgent("bob", model_client=client, handoffs=["user"], system_message="You are Bob.")
    swarm = Swarm(
        [alice, bob],
        termination_condition=HandoffTermination("user")
        | TextMentionTermination("TERMINATE")
        | MaxMessageTermination(8),
    )
    for name, team in (("proxy-team", proxy_team), ("swarm-team", swarm)):
        (directory / f"{name}.json").write_text(team.dump_component().model_dump_json(indent=2))
    return directory


def serve(tmp_path: Path, llm: ScriptedLLMProcess, **env: str) -> ServiceProcess:
    workflows = tmp_path / "workflows"
    workflows.mkdir(exist_ok=True)
    workflow_files(workflows, llm.base_url)
    return start_service(
        tmp_path,
        WORKERS="2",
        WORKFLOWS_DIR=str(workflows),
        OPENAI_API_KEY="sk-live",  # the files' masked api_key falls back to it
        LLM_BASE_URL=llm.base_url,  # demo-team's embedded model becomes the scripted LLM
        LLM_MODEL="scripted-model",
        **env,
    )


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLMProcess) -> Iterator[ServiceProcess]:
    """Two workers, the default embedded store (SQLite in DATA_DIR), API keys on."""
    with serve(tmp_path_factory.mktemp("embedded"), llm, API_KEYS=f"{KEY_A},{KEY_B}") as process:
        yield process


@pytest.fixture(scope="module")
def with_redis(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLMProcess) -> Iterator[ServiceProcess]:
    """Two workers sharing their state through a real redis-server."""
    tmp_path = tmp_path_factory.mktemp("redis")
    with (
        RedisServer(tmp_path / "redis") as redis_server,
        serve(tmp_path, llm, STATE_STORE_URI=redis_server.url) as process,
    ):
        yield process


def sdk(service: ServiceProcess, key: str = KEY_A, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.base_url}/v1", api_key=key, max_retries=0, timeout=60, **options)


def stored_by(service: ServiceProcess) -> dict[str, int]:
    """Response id -> the pid of the worker that stored it (its "turn stored" log line)."""
    workers = {}
    for line in service.logs().splitlines():
        if '"turn stored"' in line:
            record = json.loads(line)
            workers[record["response_id"]] = record["pid"]
    return workers


def calls_with(llm: ScriptedLLMProcess, marker: str) -> list[dict[str, Any]]:
    """The model calls whose messages contain `marker`."""
    return [record for record in llm.requests() if marker in json.dumps(record["messages"])]


def fresh(llm: ScriptedLLMProcess, rules: list[Any], default: str | None = "OK") -> None:
    """A new script (`default`: the answer to calls no rule matches; None: they fail)."""
    llm.reset()
    llm.load_script({"rules": rules, **({"default": default} if default is not None else {})})


async def status_of(call: Any) -> int:
    try:
        await call
    except openai.APIStatusError as error:
        return error.status_code
    return 200


# ---------------------------------------------------------------------------------- memory
async def continuation_on_the_other_worker(
    service: ServiceProcess, llm: ScriptedLLMProcess, key: str
) -> None:
    fresh(llm, [REVIEWER_ENDS])
    # A new connection per request: the kernel hands each to one worker or the other.
    client = openai.AsyncOpenAI(
        base_url=f"{service.base_url}/v1",
        api_key=key,
        max_retries=0,
        timeout=60,
        http_client=openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_keepalive_connections=0)),
    )
    crossed: list[tuple[str, str, str]] = []
    for round_ in range(10):  # bounded: which worker accepts a connection is the kernel's choice
        tags = [f"{round_}-{index}" for index in range(6)]
        firsts = await asyncio.gather(
            *(
                client.responses.create(model="demo-team", input=f"Remember the code word ALPHA-{tag}.")
                for tag in tags
            )
        )
        seconds = await asyncio.gather(
            *(
                client.responses.create(
                    model="demo-team",
                    input=f"What was the code word? (question {tag})",
                    previous_response_id=first.id,
                )
                for first, tag in zip(firsts, tags, strict=True)
            )
        )
        workers = stored_by(service)
        crossed = [
            (first.id, second.id, tag)
            for first, second, tag in zip(firsts, seconds, tags, strict=True)
            if workers[first.id] != workers[second.id]
        ]
        if crossed:
            break
    assert crossed, "every continuation was served by the worker of its first turn"
    for first_id, second_id, tag in crossed:
        # Every model call of the continuation saw the first turn: the team's memory (the client sent
        # only the question), loaded by the other worker from the shared store.
        calls = calls_with(llm, f"(question {tag})")
        assert len(calls) == 3  # planner, writer, reviewer
        assert all(f"ALPHA-{tag}" in json.dumps(call["messages"]) for call in calls)
        # Either worker serves either stored response.
        assert (await client.responses.retrieve(first_id)).id == first_id
        assert (await client.responses.retrieve(second_id)).previous_response_id == first_id
    await client.close()


async def test_a_continuation_on_the_other_worker_remembers_the_first_turn(
    embedded: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    await continuation_on_the_other_worker(embedded, llm, KEY_A)


@requires_redis
async def test_with_redis_a_continuation_on_the_other_worker_remembers(
    with_redis: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    await continuation_on_the_other_worker(with_redis, llm, "unused")


def test_streamed_and_not_the_same_answer(embedded: ServiceProcess, llm: ScriptedLLMProcess) -> None:
    fresh(llm, [REVIEWER_ENDS])
    client = sdk(embedded)
    whole = client.responses.create(model="demo-team", input="Hello")
    with client.responses.stream(model="demo-team", input="Hello") as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()
    assert whole.output_text == streamed.output_text == "Done."
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [item.type for item in streamed.output] == [item.type for item in whole.output]
    assert streamed.usage is not None and streamed.usage.total_tokens > 0


# ---------------------------------------------------------------------------------- human input
def test_a_user_proxy_team_waits_for_the_person_and_resumes_with_the_answer(
    embedded: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    fresh(
        llm,
        [
            rule("What is your name?", system="You are the greeter.", times=1),
            rule("Nice to meet you, Bob. TERMINATE", system="You are the greeter.", last_re="I am Bob"),
        ],
        default=None,
    )
    client = sdk(embedded)
    asked = client.responses.create(model="proxy-team", input="Hello")
    assert asked.status == "completed" and asked.output_text == "What is your name?"
    assert (asked.model_extra or {})["input_required"] == {
        "agent": "user_proxy",
        "prompt": "What is your name?",
    }
    with client.responses.stream(
        model="proxy-team", input="I am Bob", previous_response_id=asked.id
    ) as stream:
        for _ in stream:
            pass
        answered = stream.get_final_response()
    assert answered.output_text == "Nice to meet you, Bob." and "input_required" not in (
        answered.model_extra or {}
    )
    last = llm.requests()[-1]
    # The answer reached the assistant as the user proxy's message, after the first turn it remembers.
    assert last["messages"][-1] == {"role": "user", "content": "I am Bob", "name": "user_proxy"}
    assert "Hello" in json.dumps(last["messages"]) and "What is your name?" in json.dumps(last["messages"])
    assert llm.unused_rules() == []


def test_a_swarm_hands_off_to_the_person_and_the_answer_goes_back_to_that_agent(
    embedded: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    fresh(
        llm,
        [
            rule(Reply(text="Bob handles refunds.", tool_calls=[handoff("bob")]), system="You are Alice."),
            rule(
                Reply(text="What is your order number?", tool_calls=[handoff("user")]),
                system="You are Bob.",
                times=1,
            ),
            rule("Refund issued for order 42. TERMINATE", system="You are Bob.", last_re="Order 42"),
        ],
        default=None,
    )
    client = sdk(embedded)
    conversation = client.conversations.create(metadata={"case": "refund"})
    asked = client.responses.create(
        model="swarm-team", input="I want a refund.", conversation=conversation.id
    )
    assert asked.output_text == "What is your order number?"
    assert (asked.model_extra or {})["input_required"] == {
        "agent": "bob",
        "prompt": "What is your order number?",
    }
    activity = [
        entry
        for item in asked.output
        if item.type == "reasoning"
        for entry in (item.model_extra or {})["activity"]
    ]
    assert {"type": "handoff", "agent": "alice", "target": "bob"} in activity
    assert not any(item.type == "function_call" for item in asked.output)
    done = client.responses.create(model="swarm-team", input="Order 42.", conversation=conversation.id)
    assert done.output_text == "Refund issued for order 42." and "input_required" not in (
        done.model_extra or {}
    )
    last = llm.requests()[-1]
    assert "You are Bob." in json.dumps(last["messages"][0]) and "I want a refund." in json.dumps(
        last["messages"]
    )
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    said = [(item.role, item.content[0].text) for item in items if item.type == "message"]
    assert said == [
        ("user", "I want a refund."),
        ("assistant", "What is your order number?"),
        ("user", "Order 42."),
        ("assistant", "Refund issued for order 42."),
    ]
    assert llm.unused_rules() == []


# ------------------------------------------------------------------------ ownership, storage
def test_another_api_key_gets_404_and_store_false_keeps_nothing(
    embedded: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    fresh(llm, [REVIEWER_ENDS])
    alice, bob = sdk(embedded, KEY_A), sdk(embedded, KEY_B)
    mine = alice.responses.create(model="demo-team", input="mine")
    conversation = alice.conversations.create()
    for call in (
        lambda: bob.responses.retrieve(mine.id),
        lambda: bob.responses.input_items.list(mine.id),
        lambda: bob.responses.delete(mine.id),
        lambda: bob.responses.create(model="demo-team", input="x", previous_response_id=mine.id),
        lambda: bob.conversations.retrieve(conversation.id),
        lambda: bob.responses.create(model="demo-team", input="x", conversation=conversation.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert alice.responses.retrieve(mine.id).id == mine.id
    ephemeral = alice.responses.create(model="demo-team", input="forget me", store=False)
    assert ephemeral.output_text == "Done."
    for _ in range(4):  # whichever worker answers
        with pytest.raises(openai.NotFoundError):
            alice.responses.retrieve(ephemeral.id)
    with pytest.raises(openai.NotFoundError):
        alice.responses.create(model="demo-team", input="x", previous_response_id=ephemeral.id)
    assert ephemeral.id not in stored_by(embedded)


def test_an_expired_state_is_a_clear_404(tmp_path: Path, llm: ScriptedLLMProcess) -> None:
    with serve(tmp_path, llm, STATE_TTL_S="2") as service:
        client = sdk(service, "unused")
        first = client.responses.create(model="echo", input="short-lived")
        assert client.responses.retrieve(first.id).id == first.id

        def expired() -> bool:
            try:
                client.responses.retrieve(first.id)
            except openai.NotFoundError:
                return True
            return False

        assert wait_until(expired, timeout=15, interval=0.25)
        with pytest.raises(openai.NotFoundError) as caught:
            client.responses.create(model="echo", input="more", previous_response_id=first.id)
        assert "expired" in caught.value.message and "2 seconds" in caught.value.message


# ------------------------------------------------------------------------ one at a time, disconnects
def slow_planner() -> list[Any]:
    slow = Reply(text=SLOW_WORDS, token_ms=150)
    return [rule(slow, system="You are the planner.", times=None), REVIEWER_ENDS]


async def test_two_concurrent_continuations_get_one_200_and_one_409(
    embedded: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    fresh(llm, [REVIEWER_ENDS])
    client = openai.AsyncOpenAI(base_url=f"{embedded.base_url}/v1", api_key=KEY_A, max_retries=0, timeout=60)
    conversation = await client.conversations.create()
    await client.responses.create(model="demo-team", input="first turn", conversation=conversation.id)
    fresh(llm, slow_planner())

    both = await asyncio.gather(
        *(
            status_of(client.responses.create(model="demo-team", input=text, conversation=conversation.id))
            for text in ("one", "two")
        )
    )
    assert sorted(both) == [200, 409]
    first = await client.responses.create(model="demo-team", input="alone")
    both = await asyncio.gather(
        *(
            status_of(client.responses.create(model="demo-team", input=text, previous_response_id=first.id))
            for text in ("a", "b")
        )
    )
    assert sorted(both) == [200, 409]
    await client.close()


def test_a_disconnect_cancels_the_run_and_stores_nothing(
    embedded: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    fresh(llm, [REVIEWER_ENDS])
    client = sdk(embedded)
    conversation = client.conversations.create()
    client.responses.create(model="demo-team", input="turn one", conversation=conversation.id)
    items_before = [item.id for item in client.conversations.items.list(conversation.id, limit=100)]
    cancelled_before = metric(
        embedded.base_url, "autogen_requests_total", api="responses", outcome="cancelled"
    )
    fresh(llm, slow_planner())
    body = {"model": "demo-team", "input": "turn two LEFT", "conversation": conversation.id, "stream": True}
    headers = {"Authorization": f"Bearer {KEY_A}"}
    with httpx.stream(
        "POST", f"{embedded.base_url}/v1/responses", json=body, headers=headers, timeout=30
    ) as r:
        assert r.status_code == 200
        response_id = ""
        for line in r.iter_lines():
            if line.startswith("data: ") and '"response.created"' in line:
                response_id = json.loads(line[6:])["response"]["id"]
            if "response.reasoning_summary_text.delta" in line:
                break  # the planner is writing: leave
    assert response_id
    assert wait_until(
        lambda: (
            metric(embedded.base_url, "autogen_requests_total", api="responses", outcome="cancelled")
            > cancelled_before
        ),
        timeout=15,
    )
    stats = llm.wait_stats(lambda s: s["open_streams"] == 0 and s["in_flight"] == 0, timeout=10)
    assert stats["cancelled"] >= 1 and not calls_with(llm, "You are the writer.")  # stopped at the planner
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response_id)
    assert [item.id for item in client.conversations.items.list(conversation.id, limit=100)] == items_before
    assert response_id not in stored_by(embedded)
    # The lock is free and the team's state is the one before the turn that was cut.
    fresh(llm, [REVIEWER_ENDS])
    third = client.responses.create(model="demo-team", input="turn three", conversation=conversation.id)
    assert third.status == "completed"
    calls = calls_with(llm, "turn three")
    assert calls and all(
        "turn one" in json.dumps(c["messages"]) and "LEFT" not in json.dumps(c["messages"]) for c in calls
    )


# ---------------------------------------------------------------------------------- OpenAI Agents SDK
async def test_an_openai_agents_sdk_agent_answers_over_two_turns(
    embedded: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # no trace export (it would go to api.openai.com)
    fresh(llm, [REVIEWER_ENDS])
    client = openai.AsyncOpenAI(base_url=f"{embedded.base_url}/v1", api_key=KEY_A, max_retries=0, timeout=60)
    agent = Agent(
        name="Team",
        instructions="Answer as a team.",
        model=OpenAIResponsesModel(model="demo-team", openai_client=client),
    )
    first = await Runner.run(agent, "My favourite colour is TEAL.")
    assert first.final_output == "Done." and first.last_response_id
    second = await Runner.run(
        agent, "What is my favourite colour? (agents sdk)", previous_response_id=first.last_response_id
    )
    assert second.final_output == "Done."
    calls = calls_with(llm, "(agents sdk)")
    assert calls and all("TEAL" in json.dumps(call["messages"]) for call in calls)  # the team remembers
    streamed = Runner.run_streamed(
        agent, "Once more, streamed.", previous_response_id=second.last_response_id
    )
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "Done."
    await client.close()
