"""Workflows as models: loading, validation, Python registration, the LLM switch, turn caps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from hypothesis import given
from hypothesis import strategies as st

from service.app import create_app
from service.runs.text import TextFilter, clean_text
from service.workflows.demo_client import DemoChatCompletionClient
from service.workflows.instrumented_client import InstrumentedChatCompletionClient
from service.workflows.preparation import WorkflowLoadError
from service.workflows.registry import WorkflowRegistry
from tests.helpers.app import make_settings, running_app

BUILTIN = Path(__file__).resolve().parents[1] / "service" / "workflows" / "builtin"


def test_builtins_load_with_their_agents() -> None:
    registry = WorkflowRegistry(make_settings())
    report = registry.load_defaults()
    assert sorted(report.loaded) == ["demo-team", "echo"] and report.failed == {}
    team = registry.get("demo-team")
    assert team is not None and team.kind == "team" and team.agent_names == ("planner", "writer", "reviewer")
    echo = registry.get("echo")
    assert echo is not None and echo.kind == "agent"


def test_each_request_gets_a_fresh_team_sharing_model_clients() -> None:
    registry = WorkflowRegistry(make_settings())
    registry.load_defaults()
    workflow = registry.get("demo-team")
    assert workflow is not None
    first, second = workflow.build(), workflow.build()
    assert first is not second
    # Each team's agents (and their model contexts) are its own: they hold the conversation.
    first_agents, second_agents = first._participants, second._participants  # type: ignore[union-attr]
    assert not {id(agent) for agent in first_agents} & {id(agent) for agent in second_agents}
    assert all(
        a._model_context is not b._model_context for a, b in zip(first_agents, second_agents, strict=True)
    )
    first_clients = [agent._model_client for agent in first._participants]  # type: ignore[union-attr]
    second_clients = [agent._model_client for agent in second._participants]  # type: ignore[union-attr]
    assert first_clients == second_clients  # the same shared instances
    assert all(isinstance(client, InstrumentedChatCompletionClient) for client in first_clients)


def test_token_streaming_moves_from_the_bus_to_the_model_clients() -> None:
    registry = WorkflowRegistry(make_settings())
    registry.load_defaults()
    workflow = registry.get("demo-team")
    assert workflow is not None
    agents = workflow.build()._participants  # type: ignore[union-attr]
    assert not any(agent._model_client_stream for agent in agents)  # no per-token bus messages
    assert all(agent._model_client.stream_tokens for agent in agents)  # the clients stream instead


def test_turn_cap_is_applied_to_teams() -> None:
    registry = WorkflowRegistry(make_settings(max_agent_turns=2))
    registry.load_defaults()
    workflow = registry.get("demo-team")
    assert workflow is not None
    assert workflow.build()._max_turns == 2  # type: ignore[union-attr]


def test_workflows_dir_adds_models_and_reports_malformed_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "my-team.json").write_text((BUILTIN / "demo-team.json").read_text())
    (tmp_path / "broken.json").write_text("{ this is not json")
    (tmp_path / "wrong-kind.json").write_text(
        json.dumps({"provider": "x.Y", "component_type": "model", "config": {}})
    )
    (tmp_path / "bad-provider.json").write_text(
        json.dumps({"provider": "nowhere.Team", "component_type": "team", "config": {}})
    )
    registry = WorkflowRegistry(make_settings(workflows_dir=tmp_path))
    report = registry.load_defaults()
    assert "my-team" in report.loaded and "demo-team" in report.loaded
    failed = {Path(name).name: reason for name, reason in report.failed.items()}
    assert "invalid JSON at line 1" in failed["broken.json"]
    assert "component_type" in failed["wrong-kind.json"]
    assert "'nowhere.Team' is not allowed" in failed["bad-provider.json"]
    assert "workflow not loaded" in caplog.text


async def test_malformed_file_does_not_take_down_the_service(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("[]")
    async with running_app(create_app(make_settings(workflows_dir=tmp_path))) as http:
        assert (await http.get("/readyz")).status_code == 200
        ids = {model["id"] for model in (await http.get("/v1/models")).json()["data"]}
        assert ids == {"demo-team", "echo"}


async def test_register_a_team_from_python() -> None:
    registry = WorkflowRegistry(make_settings())
    team = RoundRobinGroupChat(
        [
            AssistantAgent("alice", model_client=DemoChatCompletionClient(role="planner")),
            AssistantAgent("bob", model_client=DemoChatCompletionClient(role="reviewer", terminate=True)),
        ],
        termination_condition=MaxMessageTermination(3),
    )
    registry.register_component("pair", team.dump_component(), description="two agents")
    registry.register_factory(
        "solo",
        lambda: AssistantAgent("solo", model_client=DemoChatCompletionClient()),
        description="one agent",
    )
    async with running_app(create_app(make_settings(), registry=registry)) as http:
        ids = {model["id"] for model in (await http.get("/v1/models")).json()["data"]}
        assert {"pair", "solo", "echo", "demo-team"} <= ids
        body = {"model": "pair", "messages": [{"role": "user", "content": "hi"}]}
        answer = (await http.post("/v1/chat/completions", json=body)).json()
        assert answer["choices"][0]["message"]["name"] == "bob"


def test_invalid_model_ids_are_refused() -> None:
    registry = WorkflowRegistry(make_settings())
    with pytest.raises(WorkflowLoadError):
        registry.register_json("bad id\n", "{}")


def test_real_llm_settings_switch_the_builtin_teams() -> None:
    settings = make_settings(llm_base_url="http://127.0.0.1:9/v1", llm_api_key="sk-test", llm_model="gpt-x")
    registry = WorkflowRegistry(settings)
    registry.load_defaults()
    workflow = registry.get("demo-team")
    assert workflow is not None
    clients = [agent._model_client for agent in workflow.build()._participants]  # type: ignore[union-attr]
    assert all(type(client.inner).__name__ == "OpenAIChatCompletionClient" for client in clients)
    assert {client.model_name for client in clients} == {"gpt-x"}


def test_demo_latency_comes_from_settings() -> None:
    registry = WorkflowRegistry(make_settings(demo_llm_ttft_ms=30, demo_llm_token_ms=2))
    registry.load_defaults()
    workflow = registry.get("echo")
    assert workflow is not None
    inner = workflow.build()._model_client.inner  # type: ignore[union-attr]
    assert inner._ttft_s == pytest.approx(0.03) and inner._token_s == pytest.approx(0.002)


@pytest.mark.parametrize(
    "pieces",
    [
        ["Done. TERMINATE"],
        ["Done. TERM", "INATE"],
        ["Done. T", "E", "R", "M", "I", "N", "A", "T", "E"],
        ["Done.", " ", "TERMINATE", "."],
    ],
)
def test_text_filter_removes_split_markers_at_the_end(pieces: list[str]) -> None:
    text_filter = TextFilter()
    text = "".join(text_filter.feed(piece) for piece in pieces) + text_filter.end()
    assert text == "Done." == clean_text("".join(pieces))


def test_text_filter_keeps_markers_inside_text_and_lookalikes() -> None:
    text_filter = TextFilter()
    pieces = ["How do I TERM", "INATE a process?", " TERMS apply", " and T"]
    text = "".join(text_filter.feed(piece) for piece in pieces) + text_filter.end()
    assert text == "How do I TERMINATE a process? TERMS apply and T"
    assert clean_text("answer\n\nline two TERMINATE") == "answer\n\nline two"
    assert clean_text("TERMINATE") == ""
    assert clean_text("APPROVE", markers=("APPROVE",)) == ""


@given(st.text(alphabet="TERMINATE ab.!\n", max_size=40), st.lists(st.integers(0, 40), max_size=6))
def test_streamed_text_equals_the_whole_text_cleaned(text: str, cuts: list[int]) -> None:
    """However a message is split into tokens, the streamed text is the non-streamed one."""
    points = sorted({min(cut, len(text)) for cut in cuts})
    pieces = [text[start:end] for start, end in zip([0, *points], [*points, len(text)], strict=True)]
    text_filter = TextFilter()
    streamed = "".join(text_filter.feed(piece) for piece in pieces) + text_filter.end()
    assert streamed == clean_text(text)
