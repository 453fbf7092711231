"""What a built team's agents can do, read from their model clients: who can see images, who can
write JSON. AgentChat keeps an agent's model client and a team's participants in private attributes
(`_model_client`, `_participants`, a SocietyOfMindAgent's `_team`): read here and nowhere else."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from autogen_agentchat.base import ChatAgent
from autogen_core.models import ChatCompletionClient


@dataclass(frozen=True)
class AgentModel:
    agent: str
    client: ChatCompletionClient

    def can(self, capability: str) -> bool:
        """Whether the model's `model_info` says it has `capability` (`vision`, `json_output`, ...)."""
        try:
            return bool(self.client.model_info.get(capability, False))
        except Exception:  # a client without model_info (a custom one) claims nothing
            return False


def agent_models(runner: object) -> list[AgentModel]:
    """Every agent of a built team (nested teams included) that has a model client, in team order."""
    return list(_walk(runner, depth=0))


def _walk(node: object, depth: int) -> Iterator[AgentModel]:
    if depth > 8:  # teams nest a few levels at most; a cycle must not hang a request
        return
    client = getattr(node, "_model_client", None)
    # A team's own client (a selector's, an orchestrator's) is not an agent's: it is not counted.
    if isinstance(node, ChatAgent) and isinstance(client, ChatCompletionClient):
        yield AgentModel(node.name, client)
    for child in getattr(node, "_participants", None) or ():
        yield from _walk(child, depth + 1)
    team = getattr(node, "_team", None)
    if team is not None:
        yield from _walk(team, depth + 1)
