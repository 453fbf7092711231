"""The history a client sends back, as the team's models receive it (the scripted LLM records it):
reasoning removed from earlier answers, and earlier answers as `assistant` messages for a lone agent
and the direct model (a team's members, a society of mind's included, get them as the caller's
messages, named `assistant`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from autogen_agentchat.agents import AssistantAgent, SocietyOfMindAgent
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient

from loadtests.scripted_llm import ScriptedLLMThread, start_scripted_llm_thread
from service.app import create_app
from service.workflows.preparation import LLM_MODEL_INFO
from tests.helpers.app import make_settings, running_app

HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "What is 3+4?"},
    {"role": "assistant", "content": "<think>\nSECRET-CHAIN adding.\n</think>\nIt is 7."},
    {"role": "user", "content": "And doubled?"},
]
# What the models must get of it (after their system message).
AS_ASSISTANT = [("user", "What is 3+4?"), ("assistant", "It is 7."), ("user", "And doubled?")]


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLMThread]:
    with start_scripted_llm_thread() as process:
        yield process


@pytest.fixture
async def sdk(
    llm: ScriptedLLMThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[openai.AsyncOpenAI]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-history")
    client = OpenAIChatCompletionClient(
        model="scripted", base_url=llm.base_url, api_key="sk-history", model_info=LLM_MODEL_INFO
    )
    solo = AssistantAgent("solo", model_client=client, system_message="You are solo.")
    (tmp_path / "solo.json").write_text(solo.dump_component().model_dump_json())
    pair = RoundRobinGroupChat(
        [AssistantAgent(name, model_client=client, system_message=f"You are {name}.") for name in ("a", "b")],
        max_turns=1,
    )
    (tmp_path / "pair.json").write_text(pair.dump_component().model_dump_json())
    inner = RoundRobinGroupChat(
        [AssistantAgent("inner", model_client=client, system_message="You are inner.")], max_turns=1
    )
    society = SocietyOfMindAgent("society", team=inner, model_client=client)
    (tmp_path / "society.json").write_text(society.dump_component().model_dump_json())
    llm_settings = {"direct_model": "on", "llm_base_url": llm.base_url, "llm_model": "scripted"}
    settings = make_settings(workflows_dir=tmp_path, data_dir=tmp_path, **llm_settings)
    async with running_app(create_app(settings)) as http:
        yield openai.AsyncOpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http)


def received(llm: ScriptedLLMThread) -> list[tuple[str, str]]:
    """The first model call's conversation (its system message left out)."""
    messages = llm.requests()[0]["messages"]
    return [(message["role"], message["content"]) for message in messages if message["role"] != "system"]


@pytest.mark.parametrize("model", ["solo", "direct"])
async def test_a_lone_agent_gets_its_earlier_answers_as_its_own_without_reasoning(
    model: str, sdk: openai.AsyncOpenAI, llm: ScriptedLLMThread
) -> None:
    llm.reset()
    await sdk.chat.completions.create(model=model, messages=HISTORY)  # type: ignore[arg-type]
    assert received(llm) == AS_ASSISTANT


@pytest.mark.parametrize("model", ["pair", "society"])
async def test_a_team_gets_earlier_answers_as_the_callers_messages_without_reasoning(
    model: str, sdk: openai.AsyncOpenAI, llm: ScriptedLLMThread
) -> None:
    llm.reset()
    await sdk.chat.completions.create(model=model, messages=HISTORY)  # type: ignore[arg-type]
    messages = llm.requests()[0]["messages"]
    earlier = [message for message in messages if message.get("name") == "assistant"]
    assert [(message["role"], message["content"]) for message in earlier] == [("user", "It is 7.")]


async def test_responses_input_replayed_by_pydantic_ai_reaches_the_agent_without_reasoning(
    sdk: openai.AsyncOpenAI, llm: ScriptedLLMThread
) -> None:
    # pydantic-ai's Responses model replays a reasoning item it cannot send back natively as an
    # assistant message of its own, in `<think>` tags; a reasoning item may come back as well.
    llm.reset()
    replayed: list[Any] = [
        {"role": "user", "content": "What is 3+4?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "SECRET-CHAIN"}]},
        {"role": "assistant", "content": "<think>\nSECRET-CHAIN adding.\n</think>"},
        {"role": "assistant", "content": "It is 7."},
        {"role": "user", "content": "And doubled?"},
    ]
    await sdk.responses.create(model="solo", input=replayed, store=False)
    assert received(llm) == AS_ASSISTANT
    assert "SECRET-CHAIN" not in httpx.Response(200, json=llm.requests()[0]["messages"]).text
