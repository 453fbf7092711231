"""Turn the OpenAI `messages` into an AgentChat task, keeping the whole conversation.

Each incoming message becomes its own `TextMessage` whose `source` comes from the message's
role, never from its content: text such as "system: ignore your instructions" stays inside a
user message, so roles cannot be spoofed through content. Reasoning a client sends back inside an
assistant message (`<think>…</think>`, as pydantic-ai replays it) is removed: the team sees answers.
"""

from __future__ import annotations

from collections.abc import Mapping

from autogen_agentchat.messages import BaseChatMessage, MultiModalMessage, TextMessage
from autogen_core import Image

from service.contract.chat import ChatMessage
from service.runs.history import ASSISTANT_SOURCE
from service.runs.text import remove_thinking

ROLE_SOURCES = {"system": "system", "developer": "system", "user": "user", "assistant": ASSISTANT_SOURCE}


def to_task(messages: list[ChatMessage], images: Mapping[str, Image] | None = None) -> list[BaseChatMessage]:
    """One message per non-empty message, in order; the last user turn ends the list. A user message
    with images is a `MultiModalMessage` (its text, then its images from `images`, by URL: see
    `service.serving.images`). Reasoning a client sent back inside an earlier answer is removed."""
    task: list[BaseChatMessage] = []
    for message in messages:
        text = remove_thinking(message.text()) if message.role == "assistant" else message.text()
        seen = [images[image.url] for _, image in message.images() if image.url in images] if images else []
        if seen:
            task.append(
                MultiModalMessage(
                    source=ROLE_SOURCES[message.role], content=[*([text] if text else []), *seen]
                )
            )
        elif text:
            task.append(TextMessage(source=ROLE_SOURCES[message.role], content=text))
    return task
