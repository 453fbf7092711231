"""The UserProxyAgent the service serves in place of AgentChat's: it never reads the server's stdin.

AgentChat's default input function calls `input()` in a thread: on a server it reads the process's
stdin, cannot be cancelled, and a line typed at the console became another caller's answer. The
registry loads every `UserProxyAgent` of a workflow as this subclass, whose input function ends the
run with the question as the answer and `input_required` set (`service.runs.context`); the caller's
next message is the person's answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Self

from autogen_agentchat.agents import UserProxyAgent
from autogen_agentchat.agents._user_proxy_agent import UserProxyAgentConfig
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_core import CancellationToken

from service.runs.context import input_function

USER_PROXY_PROVIDERS = frozenset(
    {
        "autogen_agentchat.agents.UserProxyAgent",
        "autogen_agentchat.agents._user_proxy_agent.UserProxyAgent",
    }
)


class ServedUserProxyAgent(UserProxyAgent):
    component_provider_override = "service.workflows.user_proxy.ServedUserProxyAgent"
    # The last message another agent sent it: the question it asks (`RunContext.stop_for_input`).
    told: BaseChatMessage | None = None

    @classmethod
    def _from_config(cls, config: UserProxyAgentConfig) -> Self:
        agent = cls(
            name=config.name,
            description=config.description,
            input_func=input_function(config.name, lambda: agent.told),
        )
        return agent

    async def on_messages_stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        self.told = next((message for message in reversed(messages) if message.source != self.name), None)
        async for item in super().on_messages_stream(messages, cancellation_token):
            yield item
