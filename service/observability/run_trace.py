"""Per-run tracing and accounting shared between the service and the agents' model clients.

A run's `RunTrace` is given to its `RunContext` (`service.runs.context`) when the run starts; the
model clients find the context in a context variable and open their `chat` span under the speaking
agent's `invoke_agent` span. Metrics are counted by the serving layer, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer

from service.observability.tracing import get_tracer, record_error

GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_AGENT = "gen_ai.agent.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_CONVERSATION = "gen_ai.conversation.id"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"


@dataclass
class RunTrace:
    """The open spans of one team run."""

    tracer: Tracer
    workflow_span: Span
    agent_spans: dict[str, Span] = field(default_factory=dict)

    def agent_span(self, agent: str) -> Span:
        """The open `invoke_agent` span of `agent`, started on its first use in this turn."""
        span = self.agent_spans.get(agent)
        if span is None:
            span = self.tracer.start_span(
                f"invoke_agent {agent}",
                context=trace.set_span_in_context(self.workflow_span),
                kind=SpanKind.INTERNAL,
                attributes={GEN_AI_OPERATION: "invoke_agent", GEN_AI_AGENT: agent},
            )
            self.agent_spans[agent] = span
        return span

    def end_turn(self, agent: str) -> None:
        """The agent's turn is over (a span is made if none was open)."""
        self.agent_span(agent).end()
        del self.agent_spans[agent]

    def end_all(self) -> None:
        for span in self.agent_spans.values():
            span.end()
        self.agent_spans.clear()


@contextlib.contextmanager
def traced_run(model: str, conversation_id: str) -> Iterator[RunTrace]:
    """Open the `invoke_workflow` span of one run (current while the run lasts)."""
    tracer = get_tracer()
    attributes = {
        GEN_AI_OPERATION: "invoke_workflow",
        GEN_AI_REQUEST_MODEL: model,
        GEN_AI_CONVERSATION: conversation_id,
    }
    with tracer.start_as_current_span(
        "invoke_workflow", kind=SpanKind.INTERNAL, attributes=attributes, record_exception=False
    ) as span:
        run = RunTrace(tracer=tracer, workflow_span=span)
        try:
            yield run
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                span.set_attribute("autogen.cancelled", True)
            else:
                record_error(span, exc)
            raise
        finally:
            run.end_all()
