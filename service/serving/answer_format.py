"""`response_format` (chat) and `text.format` (Responses) honoured for a team: one formatting call.

A team's agents talk in text, and the answer is whatever the last one said. When a client asks for
JSON (`json_object`, or `json_schema` with a schema), the team runs unchanged; then ONE more model
call turns its answer into that JSON: the answering agent's own model (or, if it cannot write JSON,
the first agent's that can, by `model_info["json_output"]`), with the request's `response_format`
and, for a schema, the schema in its instructions. That JSON is the answer, streamed or not; the
team's own answer becomes activity. The call is counted like every other (usage, metrics, spans),
as the agent `formatter`. A team none of whose models can write JSON gets a 400 naming the
parameter, before anything runs.

Why a formatting call rather than the schema on the answering agent's last call: which call is the
last is only known once the team stops, and giving every agent's every call the schema would change
what the team says to itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from autogen_agentchat.base import TaskResult, Team
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    MultiModalMessage,
    StructuredMessage,
    TextMessage,
    ToolCallSummaryMessage,
)
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, SystemMessage, UserMessage

from service.contract.errors import OpenAIError
from service.runs.agentchat import message_text
from service.runs.execute import Runner, RunRequest
from service.workflows.capabilities import AgentModel, agent_models
from service.workflows.instrumented_client import InstrumentedChatCompletionClient

logger = logging.getLogger(__name__)

FORMATTER = "formatter"
_ANSWERS = (TextMessage, MultiModalMessage, StructuredMessage, ToolCallSummaryMessage)


def with_answer_format(runner: Runner, response_format: dict[str, Any] | None, param: str) -> Runner:
    """The runner that honours `response_format` (unchanged when it is None).

    Raises:
        OpenAIError: 400 naming `param` when no agent of the team has a model that writes JSON.
    """
    if response_format is None:
        return runner
    capable = [model for model in agent_models(runner) if model.can("json_output")]
    if not capable:
        raise OpenAIError(
            400,
            f"This model cannot honour `{param}`: none of its agents' models writes JSON "
            "(model_info json_output). Leave it out, or ask a team whose models can.",
            param=param,
            code="unsupported_parameter",
        )
    return FormattedAnswer(runner, response_format, capable)


def answer_request(runner: Runner, request: RunRequest) -> RunRequest:
    """The run request for `runner`: a formatted answer is known at the end only, so no agent's text
    streams as the answer while it is written."""
    if isinstance(runner, FormattedAnswer):
        return dataclasses.replace(request, live_answer_agent=None)
    return request


def _instructions(response_format: Mapping[str, Any]) -> str:
    text = (
        "You turn an answer into JSON. Reply with one JSON value and nothing else: no code fence, no "
        "comment. Keep to what the answer says; where it says nothing, use null or leave the field out "
        "if the schema allows."
    )
    spec = response_format.get("json_schema")
    if isinstance(spec, Mapping):
        text += "\nThe JSON must match this JSON Schema:\n" + json.dumps(spec.get("schema", {}))
    return text


def _unfenced(text: str) -> str:
    """A model that ignores `response_format` may still fence its JSON: the fence is not the answer."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        body = stripped[3:-3]
        first_line, _, rest = body.partition("\n")
        return (rest if first_line.strip().isalpha() or not first_line.strip() else body).strip()
    return stripped


class FormattedAnswer(Team):
    """A team (or agent) whose answer is rewritten by one formatting call (see the module docstring).
    State, reset and pause are the inner runner's."""

    component_type = "team"

    def __init__(self, inner: Runner, response_format: dict[str, Any], capable: Sequence[AgentModel]) -> None:
        self._inner = inner
        self._format = response_format
        self._capable = list(capable)

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def description(self) -> str:
        return self._inner.description

    def _client(self, answering: str) -> ChatCompletionClient:
        chosen = next((model for model in self._capable if model.agent == answering), self._capable[0])
        client = chosen.client
        if isinstance(client, InstrumentedChatCompletionClient):
            # Counted and traced as its own agent, and never streamed as tokens: it is the answer.
            return InstrumentedChatCompletionClient(client.inner, FORMATTER, client.model_name)
        return client

    async def _formatted(self, answer: BaseChatMessage, token: CancellationToken | None) -> TextMessage:
        result = await self._client(answer.source).create(
            [
                SystemMessage(content=_instructions(self._format)),
                UserMessage(content=message_text(answer), source="user"),
            ],
            extra_create_args={"response_format": self._format},
            cancellation_token=token,
        )
        content = result.content if isinstance(result.content, str) else json.dumps(str(result.content))
        content = _unfenced(content)
        try:
            json.loads(content)
        except ValueError:
            logger.warning("the formatting call did not return JSON", extra={"chars": len(content)})
        return TextMessage(source=FORMATTER, content=content)

    async def run_stream(
        self,
        *,
        task: str | BaseChatMessage | Sequence[BaseChatMessage] | None = None,
        cancellation_token: CancellationToken | None = None,
        output_task_messages: bool = True,
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | TaskResult, None]:
        given = {id(message) for message in task} if isinstance(task, Sequence) else set()
        last: BaseChatMessage | None = None
        result: TaskResult | None = None
        async for item in self._inner.run_stream(
            task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
        ):
            if isinstance(item, TaskResult):
                result = item
                continue
            if isinstance(item, BaseChatMessage) and id(item) not in given:
                last = item
            yield item
        if result is None:
            return
        messages = list(result.messages)
        if isinstance(last, _ANSWERS) and message_text(last).strip():
            formatted = await self._formatted(last, cancellation_token)
            messages.append(formatted)
            yield formatted
        yield TaskResult(messages=messages, stop_reason=result.stop_reason)

    async def run(
        self,
        *,
        task: str | BaseChatMessage | Sequence[BaseChatMessage] | None = None,
        cancellation_token: CancellationToken | None = None,
        output_task_messages: bool = True,
    ) -> TaskResult:
        result: TaskResult | None = None
        async for item in self.run_stream(
            task=task, cancellation_token=cancellation_token, output_task_messages=output_task_messages
        ):
            if isinstance(item, TaskResult):
                result = item
        assert result is not None
        return result

    async def reset(self) -> None:
        if isinstance(self._inner, Team):
            await self._inner.reset()
        else:
            await self._inner.on_reset(CancellationToken())

    async def pause(self) -> None:
        if isinstance(self._inner, Team):
            await self._inner.pause()
        else:
            await self._inner.on_pause(CancellationToken())

    async def resume(self) -> None:
        if isinstance(self._inner, Team):
            await self._inner.resume()
        else:
            await self._inner.on_resume(CancellationToken())

    async def save_state(self) -> Mapping[str, Any]:
        return await self._inner.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self._inner.load_state(state)


__all__ = ["FORMATTER", "FormattedAnswer", "answer_request", "with_answer_format"]
