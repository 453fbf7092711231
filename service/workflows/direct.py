"""The direct model: one model call on the conversation, no team, no system prompt of its own.

Chat UIs send auxiliary requests (a title, tags, follow-up suggestions, autocompletion) to a model of
their choice. Pointed at a team, each is a whole team run; pointed at the direct model, each costs one
model call. The messages keep their OpenAI roles (system, user, assistant), unlike an AssistantAgent,
which would send every message but its own as a user message.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import AssistantMessage, ChatCompletionClient, LLMMessage, SystemMessage, UserMessage

from service.runs.history import ASSISTANT_SOURCE

# The sources the service gives the caller's messages (see `service.serving.task`).
SYSTEM_SOURCE = "system"


def to_llm_message(message: BaseChatMessage) -> LLMMessage:
    text = message.to_model_text()
    if message.source == SYSTEM_SOURCE:
        return SystemMessage(content=text)
    if message.source == ASSISTANT_SOURCE:
        return AssistantMessage(content=text, source=message.source)
    return UserMessage(content=text, source=message.source)


class DirectModelAgent(BaseChatAgent):
    """Answers with one call of its model client on the whole conversation (kept across turns)."""

    def __init__(self, name: str, model_client: ChatCompletionClient) -> None:
        super().__init__(name=name, description="One model call, no team.")
        self._model_client = model_client
        self._history: list[LLMMessage] = []

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> Response:
        async for item in self.on_messages_stream(messages, cancellation_token):
            if isinstance(item, Response):
                return item
        raise AssertionError("the stream ends with a Response")

    async def on_messages_stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        self._history.extend(to_llm_message(message) for message in messages)
        result = await self._model_client.create(self._history, cancellation_token=cancellation_token)
        content = result.content if isinstance(result.content, str) else str(result.content)
        self._history.append(AssistantMessage(content=content, source=self.name))
        yield Response(chat_message=TextMessage(content=content, source=self.name, models_usage=result.usage))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self._history.clear()

    async def save_state(self) -> Mapping[str, Any]:
        return {"history": [message.model_dump(mode="json") for message in self._history]}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        kinds: dict[str, type[LLMMessage]] = {
            "SystemMessage": SystemMessage,
            "UserMessage": UserMessage,
            "AssistantMessage": AssistantMessage,
        }
        self._history = [kinds[item["type"]].model_validate(item) for item in state.get("history", [])]
