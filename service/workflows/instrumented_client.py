"""A `ChatCompletionClient` wrapper that traces, counts and streams every model call of an agent.

The registry wraps each agent's (shared) model client in one of these, so the service sees
each call: a `chat` span under the agent's `invoke_agent` span, `autogen_model_calls_total`, and,
after a client disconnect, proof that no further call is made.

Token streaming goes through here too. Inside a team, AgentChat re-publishes every token chunk
on autogen-core's message bus (a task, a tracing block and a serialization per chunk), which
costs more CPU than everything else in a request. So teams run with `model_client_stream`
off, and for an agent configured to stream, `create` streams from the model itself and hands
each token straight to the run's token sink: the client receives the same tokens in the same
order, and the bus carries only whole messages.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage, ModelInfo, RequestUsage
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from pydantic import BaseModel

from service.observability.run_trace import (
    GEN_AI_AGENT,
    GEN_AI_FINISH_REASONS,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OPERATION,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_REQUEST_MODEL,
    current_run,
)
from service.observability.tracing import get_tracer, record_error


class InstrumentedChatCompletionClient(ChatCompletionClient):
    """Delegates to `inner`; adds a `chat` span and a call count per request."""

    def __init__(
        self, inner: ChatCompletionClient, agent: str | None, model_name: str, stream_tokens: bool = False
    ) -> None:
        self.inner = inner
        self.agent = agent
        self.model_name = model_name
        self.stream_tokens = stream_tokens
        # OpenAI-compatible servers only report usage in a stream when asked to.
        self._stream_kwargs: dict[str, Any] = (
            {"include_usage": True} if isinstance(inner, BaseOpenAIChatCompletionClient) else {}
        )

    def _start_span(self) -> Span:
        run = current_run.get()
        if run is not None:
            run.model_calls += 1
            if run.observer is not None:
                run.observer.model_call()
        parent = run.agent_span(self.agent) if run is not None and self.agent else None
        attributes: dict[str, Any] = {GEN_AI_OPERATION: "chat", GEN_AI_REQUEST_MODEL: self.model_name}
        if self.agent:
            attributes[GEN_AI_AGENT] = self.agent
        context = trace.set_span_in_context(parent) if parent is not None else None
        return get_tracer().start_span(
            f"chat {self.model_name}", context=context, kind=SpanKind.CLIENT, attributes=attributes
        )

    @staticmethod
    def _finish_span(span: Span, result: CreateResult) -> None:
        span.set_attribute(GEN_AI_INPUT_TOKENS, result.usage.prompt_tokens)
        span.set_attribute(GEN_AI_OUTPUT_TOKENS, result.usage.completion_tokens)
        span.set_attribute(GEN_AI_FINISH_REASONS, [str(result.finish_reason)])

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
        run = current_run.get()
        sink = run.token_sink if run is not None and self.stream_tokens and self.agent else None
        span = self._start_span()
        try:
            if sink is None:
                result = await self.inner.create(
                    messages,
                    tools=tools,
                    tool_choice=tool_choice,
                    json_output=json_output,
                    extra_create_args=extra_create_args,
                    cancellation_token=cancellation_token,
                )
            else:
                result = await self._stream_to_sink(
                    sink,
                    self.inner.create_stream(
                        messages,
                        tools=tools,
                        tool_choice=tool_choice,
                        json_output=json_output,
                        extra_create_args=extra_create_args,
                        cancellation_token=cancellation_token,
                        **self._stream_kwargs,
                    ),
                )
        except BaseException as exc:
            record_error(span, exc)
            span.end()
            raise
        self._finish_span(span, result)
        span.end()
        return result

    async def _stream_to_sink(
        self, sink: Callable[[str, str], Awaitable[None]], stream: AsyncGenerator[str | CreateResult, None]
    ) -> CreateResult:
        agent = self.agent or ""
        try:
            async for item in stream:
                if isinstance(item, CreateResult):
                    return item
                await sink(agent, item)
        finally:
            await stream.aclose()
        raise RuntimeError("the model stream ended without a result")

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        span = self._start_span()
        stream = self.inner.create_stream(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
            **self._stream_kwargs,
        )
        try:
            async for item in stream:
                if isinstance(item, CreateResult):
                    self._finish_span(span, item)
                yield item
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                record_error(span, exc)
            raise
        finally:
            await stream.aclose()
            span.end()

    async def close(self) -> None:
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self.inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()) -> int:
        return self.inner.count_tokens(messages, tools=tools)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        return self.inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> Any:  # deprecated upstream in favour of model_info
        return self.inner.model_info

    @property
    def model_info(self) -> ModelInfo:
        return self.inner.model_info
