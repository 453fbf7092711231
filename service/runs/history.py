"""How the caller's conversation reaches a lone agent: its earlier answers as its own.

A chat client sends the whole conversation with each request; the service's answers in it are
`assistant` messages (task messages with the source `assistant`, `service.serving.task`). AgentChat
shows an agent every task message as a user's message (a `user` message named `assistant`, upstream).
In a team that is right: the earlier answer came from the team, not from each member. A workflow
that is one `AssistantAgent` answered those turns itself, so its model gets them as `assistant`
messages. (Other lone agents keep plain `TextMessage`s: a `SocietyOfMindAgent` hands its task to an
inner team, which accepts only the message types it knows.)
"""

from __future__ import annotations

from collections.abc import Sequence

from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core.models import AssistantMessage, UserMessage

ASSISTANT_SOURCE = "assistant"


class EarlierAnswer(TextMessage):
    """An earlier answer of the conversation: an `assistant` message in the agent's model context.

    It stays a `TextMessage` everywhere else (its `type`, its dump), so saved state loads anywhere.
    """

    def to_model_message(self) -> UserMessage:
        # AgentChat types this as a UserMessage, but an agent's model context holds any LLM message.
        return AssistantMessage(content=self.content, source=self.source)  # type: ignore[return-value]


def for_lone_agent(task: Sequence[BaseChatMessage]) -> list[BaseChatMessage]:
    """`task` with the earlier answers as `EarlierAnswer`s."""
    return [
        EarlierAnswer(source=message.source, content=message.content, id=message.id)
        if type(message) is TextMessage and message.source == ASSISTANT_SOURCE
        else message
        for message in task
    ]
