"""A `ChatCompletionClient` wrapper that traces, counts and streams every model call of a run.

The registry wraps each model client of a workflow (agents', selectors', orchestrators') in one of
these, so the service sees every call:
- a `chat` span under the agent's `invoke_agent` span, and `autogen_model_calls_total`;
- the call's usage, reported to the run (`ModelUsage`): AgentChat's messages do not carry the usage
  of selector, orchestrator or code-generation calls;
- the request's `max_tokens`, passed to each call;
- failures of the LLM behind it, as `UpstreamModelError` / `UpstreamModelTimeout`;
- after a client disconnect, proof that no further call is made.

Token streaming goes through here too. Inside a team, AgentChat re-publishes every token chunk on
autogen-core's message bus (a task, a tracing block and a serialization per chunk), which costs more
CPU than everything else in a request. So teams run with `model_client_stream` off, and for an agent
configured to stream, `create` streams from the model itself and hands each token straight to the
run: the client receives the same tokens in the same order, and the bus carries only whole messages.
It does so in both modes: a non-streamed request makes the very same model calls as a streamed one
(the same timing, so time-based terminations agree; the same reasoning and text).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import httpx2
import openai
import pydantic
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
)
from service.observability.tracing import get_tracer, record_error
from service.runs.context import RunContext, current_run_context
from service.runs.errors import UpstreamModelError, UpstreamModelTimeout
from service.workflows.upstream_http import upstream_call

# What an LLM failure looks like from inside autogen-ext's OpenAI client: the SDK's own errors, the
# HTTP layer's, and a stream it cannot parse.
_UPSTREAM_TIMEOUTS = (openai.APITimeoutError, httpx2.TimeoutException)
_UPSTREAM_FAILURES = (openai.APIError, httpx2.HTTPError, json.JSONDecodeError, pydantic.ValidationError)


class InstrumentedChatCompletionClient(ChatCompletionClient):
    """Delegates to `inner`; adds a `chat` span, usage events and a call count per call."""

    def __init__(
        self, inner: ChatCompletionClient, agent: str | None, model_name: str, stream_tokens: bool = False
    ) -> None:
        self.inner = inner
        self.agent = agent
        self.model_name = model_name
        self.stream_tokens = stream_tokens
        self._upstream = isinstance(inner, BaseOpenAIChatCompletionClient)
        # OpenAI-compatible servers only report usage in a stream when asked to.
        self._stream_kwargs: dict[str, Any] = {"include_usage": True} if self._upstream else {}

    @property
    def _label(self) -> str:
        return self.agent or "model"

    def _start_span(self, run: RunContext | None) -> Span:
        trace_run = run.trace if run is not None else None
        if run is not None:
            run.model_call_started()
        parent = trace_run.agent_span(self.agent) if trace_run is not None and self.agent else None
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

    def _create_args(self, run: RunContext | None, extra_create_args: Mapping[str, Any]) -> Mapping[str, Any]:
        """The call's extra arguments with the request's `max_tokens` (the lower one wins)."""
        cap = run.max_tokens if run is not None else None
        if cap is None:
            return extra_create_args
        own = extra_create_args.get("max_tokens")
        return {**extra_create_args, "max_tokens": min(cap, own) if isinstance(own, int) else cap}

    @contextlib.asynccontextmanager
    async def _call(self, span: Span) -> AsyncIterator[None]:
        """One upstream call: its responses closed at the end, its failures named for the client."""
        try:
            if self._upstream:
                async with upstream_call():
                    yield
            else:
                yield
        except UpstreamModelError as exc:
            record_error(span, exc)
            raise
        except _UPSTREAM_TIMEOUTS as exc:
            record_error(span, exc)
            raise UpstreamModelTimeout(type(exc).__name__) from exc
        except _UPSTREAM_FAILURES as exc:
            record_error(span, exc)
            if not self._upstream:
                raise
            raise UpstreamModelError(type(exc).__name__) from exc
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                record_error(span, exc)
            raise

    async def _report(self, run: RunContext | None, span: Span, result: CreateResult) -> None:
        self._finish_span(span, result)
        if run is not None:
            await run.model_called(
                self._label,
                self.model_name,
                result.usage.prompt_tokens,
                result.usage.completion_tokens,
                str(result.finish_reason),
            )

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
        run = current_run_context.get()
        # Whether the client streams or not, the call is the same (docs/service-contract.md).
        streams = run is not None and self.stream_tokens and self.agent is not None
        if run is not None:
            await run.model_call_starts()
        span = self._start_span(run)
        args = self._create_args(run, extra_create_args)
        try:
            async with self._call(span):
                if streams:
                    assert run is not None and self.agent is not None
                    result = await self._stream_to_run(
                        run,
                        # Structured output's answer is the parsed object's canonical JSON (what
                        # the agent's `StructuredMessage` says), not the model's raw tokens.
                        None if isinstance(json_output, type) else self.agent,
                        self.inner.create_stream(
                            messages,
                            tools=tools,
                            tool_choice=tool_choice,
                            json_output=json_output,
                            extra_create_args=args,
                            cancellation_token=cancellation_token,
                            **self._stream_kwargs,
                        ),
                    )
                else:
                    result = await self.inner.create(
                        messages,
                        tools=tools,
                        tool_choice=tool_choice,
                        json_output=json_output,
                        extra_create_args=args,
                        cancellation_token=cancellation_token,
                    )
            await self._report(run, span, result)
        finally:
            span.end()
        return result

    @staticmethod
    async def _stream_to_run(
        run: RunContext, agent: str | None, stream: AsyncGenerator[str | CreateResult, None]
    ) -> CreateResult:
        """The call's result; its tokens handed to the run as they come, as `agent`'s (None: kept back)."""
        offer = run.offer_token
        try:
            async for item in stream:
                if isinstance(item, CreateResult):
                    return item
                if agent is None:
                    continue
                rest = offer(agent, item)
                if rest:  # the client reads slower than the model writes: wait for room
                    await run.send_all(rest)
        finally:
            await stream.aclose()
        raise UpstreamModelError("the model stream ended without a result")

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
        run = current_run_context.get()
        if run is not None:
            await run.model_call_starts()
        span = self._start_span(run)
        stream = self.inner.create_stream(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=self._create_args(run, extra_create_args),
            cancellation_token=cancellation_token,
            **self._stream_kwargs,
        )
        try:
            async with self._call(span):
                async for item in stream:
                    if isinstance(item, CreateResult):
                        await self._report(run, span, item)
                    yield item
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
