"""The UserProxyAgent the service serves in place of AgentChat's: it never reads the server's stdin.

AgentChat's default input function calls `input()` in a thread: on a server it reads the process's
stdin, cannot be cancelled, and a line typed at the console became another caller's answer. The
registry loads every `UserProxyAgent` of a workflow as this subclass, whose input function ends the
run with the question as the answer and `input_required` set (`service.runs.context`); the caller's
next message is the person's answer.
"""

from __future__ import annotations

from typing import Self

from autogen_agentchat.agents import UserProxyAgent
from autogen_agentchat.agents._user_proxy_agent import UserProxyAgentConfig

from service.runs.context import input_function

USER_PROXY_PROVIDERS = frozenset(
    {
        "autogen_agentchat.agents.UserProxyAgent",
        "autogen_agentchat.agents._user_proxy_agent.UserProxyAgent",
    }
)


class ServedUserProxyAgent(UserProxyAgent):
    component_provider_override = "service.workflows.user_proxy.ServedUserProxyAgent"

    @classmethod
    def _from_config(cls, config: UserProxyAgentConfig) -> Self:
        return cls(name=config.name, description=config.description, input_func=input_function(config.name))
