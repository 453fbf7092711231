"""The embedded default model: a deterministic, offline `ChatCompletionClient`.

It needs no network and no API key, streams word tokens, reports token usage and, for the
agent whose `role` is the last in a team, ends the conversation with `TERMINATE`. It is a
declarative AutoGen component, so workflow JSON files can name it like any other model client.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal, Self

from autogen_core import CancellationToken, Component
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, Field

DemoRole = Literal["assistant", "echo", "planner", "writer", "reviewer"]

TERMINATE_MARKER = "TERMINATE"
_TOKEN_PATTERN = re.compile(r"\S+\s*")
_TOPIC_CHARS = 120


class InjectedFault(RuntimeError):
    """Raised by the embedded model when `fail_after_tokens` asks for a fault."""


class DemoChatCompletionClientConfig(BaseModel):
    """Configuration of the embedded model (the JSON `config` of the component)."""

    role: DemoRole = "assistant"
    terminate: bool = Field(False, description="End the reply with TERMINATE (the team's last speaker).")
    ttft_ms: float | None = Field(None, ge=0, description="Time to first token; None = service default.")
    token_ms: float | None = Field(None, ge=0, description="Delay per token; None = service default.")
    fail_after_tokens: int | None = Field(
        None, ge=0, description="Fault injection for tests and drills: raise after this many tokens."
    )


def _text_of(message: LLMMessage) -> str:
    content = getattr(message, "content", "")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part for part in content if isinstance(part, str))
    return ""


def _topic(messages: Sequence[LLMMessage]) -> str:
    """The last thing the human asked: the newest user message whose source is `user`."""
    for message in reversed(messages):
        if isinstance(message, UserMessage) and message.source == "user":
            text = " ".join(_text_of(message).split())
            return text if len(text) <= _TOPIC_CHARS else text[: _TOPIC_CHARS - 3] + "..."
    return "your request"


def compose_reply(role: DemoRole, messages: Sequence[LLMMessage], terminate: bool) -> str:
    """A plausible, role-aware, deterministic reply to the conversation so far."""
    topic = _topic(messages)
    turn = sum(1 for message in messages if not isinstance(message, SystemMessage))
    if role == "echo":
        reply = topic if topic != "your request" else "(nothing to echo)"
    elif role == "planner":
        reply = (
            f'Plan for "{topic}": 1. pin down what is being asked; 2. draft a direct answer '
            "with the key facts; 3. review the draft for accuracy and clarity."
        )
    elif role == "writer":
        reply = (
            f'Draft: here is a direct answer to "{topic}". It states the main point first, '
            "backs it with two supporting facts, and ends with a one-line summary."
        )
    elif role == "reviewer":
        reply = (
            f'Review: the draft answers "{topic}" directly and is accurate. '
            "Final answer: the main point first, two supporting facts, and a one-line summary."
        )
    else:
        reply = f'Answer (turn {turn}): you asked "{topic}". This is the embedded offline model replying.'
    return f"{reply} {TERMINATE_MARKER}" if terminate else reply


async def _cancellable_sleep(seconds: float, cancellation_token: CancellationToken | None) -> None:
    """Sleep like a model call: cancelling the run's token ends the wait at once."""
    wait = asyncio.ensure_future(asyncio.sleep(seconds))
    if cancellation_token is not None:
        cancellation_token.link_future(wait)
    await wait


def count_words(messages: Sequence[LLMMessage]) -> int:
    return sum(len(_text_of(message).split()) for message in messages)


class DemoChatCompletionClient(ChatCompletionClient, Component[DemoChatCompletionClientConfig]):
    """Deterministic offline chat model with configurable latency (see module docstring)."""

    component_type = "model"
    component_config_schema = DemoChatCompletionClientConfig
    component_provider_override = "service.workflows.demo_client.DemoChatCompletionClient"

    def __init__(
        self,
        role: DemoRole = "assistant",
        terminate: bool = False,
        ttft_ms: float | None = None,
        token_ms: float | None = None,
        fail_after_tokens: int | None = None,
    ) -> None:
        self._config = DemoChatCompletionClientConfig(
            role=role,
            terminate=terminate,
            ttft_ms=ttft_ms,
            token_ms=token_ms,
            fail_after_tokens=fail_after_tokens,
        )
        self._ttft_s = (ttft_ms or 0.0) / 1000
        self._token_s = (token_ms or 0.0) / 1000
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._last_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    def _usage(self, messages: Sequence[LLMMessage], completion_tokens: int) -> RequestUsage:
        usage = RequestUsage(prompt_tokens=count_words(messages), completion_tokens=completion_tokens)
        self._last_usage = usage
        self._total_usage = RequestUsage(
            prompt_tokens=self._total_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total_usage.completion_tokens + usage.completion_tokens,
        )
        return usage

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        reply, tokens, finish_reason = self._reply(messages, extra_create_args)
        if self._config.fail_after_tokens is not None:
            raise InjectedFault("embedded model: injected fault")
        delay = self._ttft_s + self._token_s * len(tokens)
        if delay:
            await _cancellable_sleep(delay, cancellation_token)
        return CreateResult(
            finish_reason=finish_reason, content=reply, usage=self._usage(messages, len(tokens)), cached=False
        )

    def _reply(
        self, messages: Sequence[LLMMessage], extra_create_args: Mapping[str, Any]
    ) -> tuple[str, list[str], Literal["stop", "length"]]:
        """The reply, its tokens and finish reason: `max_tokens` cuts it, like a real model's."""
        reply = compose_reply(self._config.role, messages, self._config.terminate)
        tokens = _TOKEN_PATTERN.findall(reply)
        cap = extra_create_args.get("max_tokens")
        if isinstance(cap, int) and 0 < cap < len(tokens):
            tokens = tokens[:cap]
            return "".join(tokens), tokens, "length"
        return reply, tokens, "stop"

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
        include_usage: bool | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        reply, tokens, finish_reason = self._reply(messages, extra_create_args)
        if self._ttft_s:
            await _cancellable_sleep(self._ttft_s, cancellation_token)
        for index, token in enumerate(tokens):
            if cancellation_token is not None and cancellation_token.is_cancelled():
                raise asyncio.CancelledError()
            if index == self._config.fail_after_tokens:
                raise InjectedFault("embedded model: injected fault")
            if index:
                # Like a real model stream, each token is a suspension point (even at zero
                # latency), so the server can send what it has while the team runs.
                await asyncio.sleep(self._token_s)
            yield token
        yield CreateResult(
            finish_reason=finish_reason, content=reply, usage=self._usage(messages, len(tokens)), cached=False
        )

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._last_usage

    def total_usage(self) -> RequestUsage:
        return self._total_usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()) -> int:
        return count_words(messages)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        return max(0, 128_000 - count_words(messages))

    @property
    def capabilities(self) -> Any:  # deprecated upstream in favour of model_info
        return self.model_info

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(
            vision=False,
            function_calling=False,
            json_output=False,
            family=ModelFamily.UNKNOWN,
            structured_output=False,
            multiple_system_messages=True,
        )

    def _to_config(self) -> DemoChatCompletionClientConfig:
        return self._config.model_copy()

    @classmethod
    def _from_config(cls, config: DemoChatCompletionClientConfig) -> Self:
        return cls(**config.model_dump())
