"""AgentChat's teams on the service's lean runtime (`service.workflows.runtime`), chosen at load.

`Team.load_component` cannot be given a runtime, so the registry loads each team of a workflow
whose type is known here as the subclass below: AgentChat's own `_from_config` builds it (every
option of every team type, participants and nested teams included), and the subclass only adds
`runtime=LeanAgentRuntime()` through the team's public `runtime` parameter, and a run scope around
`run_stream`. The subclasses keep AgentChat's provider names when dumped.

A team type not listed here (a custom team class) keeps AgentChat's default runtime; so does every
team while `AGENT_RUNTIME=default` or runtime tracing (`AUTOGEN_RUNTIME_TRACING`) is on, since the
lean runtime traces nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Any

from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_agentchat.teams import (
    BaseGroupChat,
    GraphFlow,
    MagenticOneGroupChat,
    RoundRobinGroupChat,
    SelectorGroupChat,
    Swarm,
)
from autogen_agentchat.teams._group_chat._events import SerializableException
from autogen_core import CancellationToken

from service.workflows.runtime import LeanAgentRuntime


class LeanRuntimeTeam(BaseGroupChat):
    """The part every lean team adds to its AgentChat class (put first among the bases)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("runtime") is None:
            kwargs["runtime"] = LeanAgentRuntime()
        super().__init__(*args, **kwargs)

    async def run_stream(
        self,
        *,
        task: str | BaseChatMessage | Sequence[BaseChatMessage] | None = None,
        cancellation_token: CancellationToken | None = None,
        output_task_messages: bool = True,
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | TaskResult, None]:
        """AgentChat's `run_stream`, inside a run scope of the runtime.

        The team runs with a token of its own, cancelled with the caller's, or by the runtime when a
        handler fails; such a failure is then raised as the default runtime's team raises it: a
        `RuntimeError` with the serialized exception (`<Type>: <message>` first).
        """
        runtime = self._runtime
        if not isinstance(runtime, LeanAgentRuntime):  # built with a runtime of the caller's
            async for item in super().run_stream(
                task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
            ):
                yield item
            return
        token = CancellationToken()
        if cancellation_token is not None:
            cancellation_token.add_callback(token.cancel)
        async with runtime.run_scope(token):
            stream = super().run_stream(
                task=task, cancellation_token=token, output_task_messages=output_task_messages
            )
            try:
                async with contextlib.aclosing(stream):
                    async for item in stream:
                        yield item
            except asyncio.CancelledError:
                current = asyncio.current_task()
                failure = runtime.failure
                if failure is None or (current is not None and current.cancelling()):
                    raise
                if not isinstance(failure, Exception):
                    raise
                raise RuntimeError(str(SerializableException.from_exception(failure))) from failure


class LeanRoundRobinGroupChat(LeanRuntimeTeam, RoundRobinGroupChat):
    pass


class LeanSelectorGroupChat(LeanRuntimeTeam, SelectorGroupChat):
    pass


class LeanSwarm(LeanRuntimeTeam, Swarm):
    pass


class LeanMagenticOneGroupChat(LeanRuntimeTeam, MagenticOneGroupChat):
    pass


class LeanGraphFlow(LeanRuntimeTeam, GraphFlow):
    pass


_LEAN_TEAMS: tuple[type[LeanRuntimeTeam], ...] = (
    LeanRoundRobinGroupChat,
    LeanSelectorGroupChat,
    LeanSwarm,
    LeanMagenticOneGroupChat,
    LeanGraphFlow,
)


def _providers(lean: type[LeanRuntimeTeam]) -> dict[str, str]:
    agentchat = lean.__bases__[1]  # the AgentChat class after the mixin
    target = f"{lean.__module__}.{lean.__qualname__}"
    names = {
        f"{agentchat.__module__}.{agentchat.__qualname__}",
        f"autogen_agentchat.teams.{agentchat.__name__}",
    }
    return dict.fromkeys(names, target)


# A team's provider in a workflow file -> its lean class's provider.
LEAN_TEAM_PROVIDERS: dict[str, str] = {
    provider: target for lean in _LEAN_TEAMS for provider, target in _providers(lean).items()
}


def use_lean_runtime(teams: Iterable[dict[str, Any]]) -> list[str]:
    """Point the team components (`provider` + `config` dicts, changed in place) whose type the lean
    runtime runs at their lean classes; return the providers of the others, which keep AgentChat's
    default runtime."""
    others: list[str] = []
    for team in teams:
        provider = str(team.get("provider"))
        lean = LEAN_TEAM_PROVIDERS.get(provider)
        if lean is not None:
            team["provider"] = lean
        elif provider not in LEAN_TEAM_PROVIDERS.values():
            others.append(provider)
    return others
