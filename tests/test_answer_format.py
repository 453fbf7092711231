"""Issue 21, item 7: what a team cannot honour is refused by name; `response_format` / `text.format` are
honoured by one formatting call on the team's answer. Real app (ASGI transport), the official `openai`
SDK, a real AgentChat team whose model is the scripted fake LLM (what it received is checked)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel

from loadtests.scripted_llm import ScriptedLLMThread, rule, start_scripted_llm_thread
from service.app import create_app
from service.workflows.preparation import LLM_MODEL_INFO
from service.workflows.registry import WorkflowRegistry
from tests.helpers.app import make_settings, running_app

TEAM_ANSWER = "Paris is the capital of France, with about 2.1 million people."
CITY = {"city": "Paris", "population": 2100000}


class City(BaseModel):
    city: str
    population: int


SCHEMA = {"name": "City", "schema": City.model_json_schema(), "strict": True}


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLMThread]:
    with start_scripted_llm_thread() as thread:
        yield thread


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dumped component masks its api_key: the client falls back to OPENAI_API_KEY."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")


@asynccontextmanager
async def service(tmp_path: Path, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(data_dir=tmp_path / "data")
    registry = WorkflowRegistry(settings)
    client = OpenAIChatCompletionClient(
        model="scripted", base_url=base_url, api_key="sk-x", max_retries=0, model_info=LLM_MODEL_INFO
    )
    writer = AssistantAgent("writer", model_client=client, system_message="You are the writer.")
    team = RoundRobinGroupChat([writer], termination_condition=MaxMessageTermination(2))
    registry.register_component("city-team", team.dump_component())
    async with running_app(create_app(settings, registry=registry)) as http:
        yield http


def script(llm: ScriptedLLMThread) -> None:
    llm.reset()
    llm.load_script([rule({"json": CITY}, json=True, times=None), rule(TEAM_ANSWER, json=False, times=None)])


def sdk(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


def formatting_call(llm: ScriptedLLMThread) -> dict[str, Any]:
    calls = llm.requests()
    assert len(calls) == 2, calls  # the team's answer, then the one formatting call
    assert calls[0]["response_format"] is None
    assert TEAM_ANSWER in json.dumps(calls[1]["messages"])
    return calls[1]


async def test_chat_response_format_json_schema_is_the_answer_streamed_or_not(
    tmp_path: Path, llm: ScriptedLLMThread
) -> None:
    async with service(tmp_path, llm.base_url) as http:
        client = sdk(http)
        fmt: Any = {"type": "json_schema", "json_schema": SCHEMA}
        script(llm)
        completion = await client.chat.completions.create(
            model="city-team",
            messages=[{"role": "user", "content": "Tell me about Paris."}],
            response_format=fmt,
        )
        content = completion.choices[0].message.content
        assert content is not None and json.loads(content) == CITY
        call = formatting_call(llm)
        assert call["response_format"] == fmt
        assert completion.usage is not None
        reported = [record["reply"]["usage"] for record in llm.requests()]
        assert completion.usage.completion_tokens == sum(usage["completion_tokens"] for usage in reported)
        # The team's own answer is activity now.
        reasoning = str((completion.choices[0].message.model_extra or {}).get("reasoning_content"))
        assert TEAM_ANSWER in reasoning
        assert content not in reasoning  # the formatted answer is shown once: as the answer

        script(llm)
        stream = await client.chat.completions.create(
            model="city-team",
            messages=[{"role": "user", "content": "Tell me about Paris."}],
            response_format=fmt,
            stream=True,
        )
        streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        assert streamed == content
        formatting_call(llm)

        script(llm)
        parsed = await client.chat.completions.parse(
            model="city-team", messages=[{"role": "user", "content": "Paris?"}], response_format=City
        )
        assert parsed.choices[0].message.parsed == City(**CITY)


async def test_chat_json_object_and_responses_text_format(tmp_path: Path, llm: ScriptedLLMThread) -> None:
    async with service(tmp_path, llm.base_url) as http:
        client = sdk(http)
        script(llm)
        completion = await client.chat.completions.create(
            model="city-team",
            messages=[{"role": "user", "content": "Paris?"}],
            response_format={"type": "json_object"},
        )
        assert json.loads(completion.choices[0].message.content or "") == CITY
        assert formatting_call(llm)["response_format"] == {"type": "json_object"}

        script(llm)
        response = await client.responses.parse(model="city-team", input="Paris?", text_format=City)
        assert response.output_parsed == City(**CITY)
        assert formatting_call(llm)["response_format"]["json_schema"]["schema"] == response_schema(llm)
        assert response.text is not None and response.text.format is not None
        assert response.text.format.type == "json_schema"  # the format asked for, echoed
        assert getattr(response.text.format, "name", None) == "City"

        script(llm)
        async with client.responses.stream(model="city-team", input="Paris?", text_format=City) as events:
            final = await events.get_final_response()
        assert final.output_parsed == City(**CITY)


def response_schema(llm: ScriptedLLMThread) -> Any:
    return llm.requests()[1]["response_format"]["json_schema"]["schema"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]},
            "tool_choice",
        ),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"function_call": {"name": "f"}}, "function_call"),
        ({"response_format": {"type": "grammar"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"stop": ["END"]}, "stop"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        # The embedded demo model writes no JSON: refused before anything runs.
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
async def test_chat_refuses_what_it_cannot_honour_by_name(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    request = {"model": "demo-team", "messages": [{"role": "user", "content": "hi"}], **body}
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


async def test_client_tools_with_auto_or_none_are_accepted_and_never_called(
    client: httpx.AsyncClient,
) -> None:
    tools = [
        {"type": "function", "function": {"name": f"tool_{index}", "parameters": {}}} for index in range(36)
    ]
    for choice in (None, "auto", "none"):
        body: dict[str, Any] = {
            "model": "demo-team",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": tools,
            "stop": None,
            "logprobs": False,
            "response_format": {"type": "text"},
        }
        if choice is not None:
            body["tool_choice"] = choice
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"].get("tool_calls") is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"text": {"format": {"type": "grammar"}}}, "text"),
        ({"background": True}, "background"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),  # demo-team writes no JSON
    ],
)
async def test_responses_refuse_what_they_cannot_honour_by_name(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/responses", json={"model": "demo-team", "input": "hi", **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_a_live_answer_agent_streams_as_activity_and_the_json_is_the_answer(
    tmp_path: Path, llm: ScriptedLLMThread
) -> None:
    """`direct` streams its text as the answer while it is written; with a JSON format that text is
    activity and the formatted JSON alone is the content."""
    settings = make_settings(
        data_dir=tmp_path / "data", direct_model="on", llm_base_url=llm.base_url, llm_model="scripted"
    )
    async with running_app(create_app(settings)) as http:
        client = sdk(http)
        script(llm)
        stream = await client.chat.completions.create(
            model="direct",
            messages=[{"role": "user", "content": "Paris?"}],
            response_format={"type": "json_object"},
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
        content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert json.loads(content) == CITY
        activity = "".join(
            str((chunk.choices[0].delta.model_extra or {}).get("reasoning_content") or "")
            for chunk in chunks
            if chunk.choices
        )
        assert TEAM_ANSWER in activity
        formatting_call(llm)
