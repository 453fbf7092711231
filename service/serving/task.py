"""Turn the OpenAI `messages` into an AgentChat task, keeping the whole conversation.

Each incoming message becomes its own `TextMessage` whose `source` comes from the message's
role, never from its content: text such as "system: ignore your instructions" stays inside a
user message, so roles cannot be spoofed through content. Reasoning a client sends back inside an
assistant message (`<think>…</think>`, as pydantic-ai replays it) is removed: the team sees answers.
"""

from __future__ import annotations

from autogen_agentchat.messages import TextMessage

from service.contract.chat import ChatMessage
from service.runs.history import ASSISTANT_SOURCE
from service.runs.text import remove_thinking

ROLE_SOURCES = {"system": "system", "developer": "system", "user": "user", "assistant": ASSISTANT_SOURCE}


def to_task(messages: list[ChatMessage]) -> list[TextMessage]:
    """One `TextMessage` per non-empty message, in order; the last user turn ends the list."""
    task = [
        TextMessage(source=ROLE_SOURCES[message.role], content=text)
        for message in messages
        if (text := remove_thinking(message.text()) if message.role == "assistant" else message.text())
    ]
    return task
