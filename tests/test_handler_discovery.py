"""Handler discovery cached per class finds exactly what AgentChat's own scan finds, for every
group-chat agent class AgentChat ships, and the teams still run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_agentchat.teams._group_chat._chat_agent_container import ChatAgentContainer
from autogen_agentchat.teams._group_chat._graph._digraph_group_chat import GraphFlowManager
from autogen_agentchat.teams._group_chat._magentic_one._magentic_one_orchestrator import (
    MagenticOneOrchestrator,
)
from autogen_agentchat.teams._group_chat._round_robin_group_chat import RoundRobinGroupChatManager
from autogen_agentchat.teams._group_chat._selector_group_chat import SelectorGroupChatManager
from autogen_agentchat.teams._group_chat._swarm_group_chat import SwarmGroupChatManager
from autogen_core import MessageContext, RoutedAgent, event
from autogen_ext.models.replay import ReplayChatCompletionClient

from service.workflows.handler_discovery import cache_handler_discovery

AGENT_CLASSES: list[type[RoutedAgent]] = [
    ChatAgentContainer,
    GraphFlowManager,
    MagenticOneOrchestrator,
    RoundRobinGroupChatManager,
    SelectorGroupChatManager,
    SwarmGroupChatManager,
]


def names(handlers: Sequence[Any]) -> set[str]:
    return {handler.__name__ for handler in handlers}


def scan(cls: type[RoutedAgent]) -> set[str]:
    """AgentChat's own scan, whatever is installed over it."""
    discover = RoutedAgent.__dict__["_discover_handlers"].__func__
    original = getattr(discover, "__wrapped__", discover)
    return names(original(cls))


@pytest.fixture(autouse=True)
def cached() -> None:
    cache_handler_discovery()
    cache_handler_discovery()  # a second install changes nothing


@pytest.mark.parametrize("cls", AGENT_CLASSES, ids=lambda cls: cls.__name__)
def test_cached_discovery_finds_what_the_scan_finds(cls: type[RoutedAgent]) -> None:
    first = cls._discover_handlers()
    assert names(first) == scan(cls)
    assert first, "every group-chat agent has handlers"
    assert cls._discover_handlers() is first  # the scan ran once


def test_installed_once_and_a_class_of_its_own_gets_its_own_handlers() -> None:
    discover = RoutedAgent.__dict__["_discover_handlers"].__func__
    assert getattr(discover, "__wrapped__", None) is not None
    assert getattr(discover.__wrapped__, "__wrapped__", None) is None  # not wrapped twice

    class Greeter(RoutedAgent):
        @event
        async def on_text(self, message: str, ctx: MessageContext) -> None:
            del message, ctx

    class LoudGreeter(Greeter):
        @event
        async def on_number(self, message: int, ctx: MessageContext) -> None:
            del message, ctx

    assert names(Greeter._discover_handlers()) == {"on_text"}
    assert names(LoudGreeter._discover_handlers()) == {"on_text", "on_number"}
    assert names(Greeter._discover_handlers()) == {"on_text"}


def test_an_override_of_discovery_is_kept() -> None:
    class Custom(RoutedAgent):
        @classmethod
        def _discover_handlers(cls) -> list[Any]:
            return []

    assert Custom._discover_handlers() == []


async def test_a_team_runs_twice_with_cached_discovery() -> None:
    for _ in range(2):
        model = ReplayChatCompletionClient(["first", "second"])
        team = RoundRobinGroupChat(
            [AssistantAgent("a", model_client=model), AssistantAgent("b", model_client=model)],
            termination_condition=MaxMessageTermination(3),
        )
        result = await team.run(task="hello")
        assert [getattr(message, "content", None) for message in result.messages] == [
            "hello",
            "first",
            "second",
        ]
