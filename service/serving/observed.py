"""The request metrics of a run, counted where the serving layer hands the run its sink.

The run layer counts nothing: `ObservedSink` sits between the run and its real sink (the stream's
queue, or the list of a whole answer) and counts what passes: each agent's finished turns
(`autogen_agent_messages_total`), and at the run's end its tokens and model calls (from the usage
that `RunEnded` carries: calls cancelled mid-way included).
"""

from __future__ import annotations

from service.observability.metrics import RequestObserver
from service.runs.context import EventSink
from service.runs.events import AgentTurnEnded, RunEnded, RunEvent


class ObservedSink:
    """`sink`, counting the run's agent turns, tokens and model calls on `observer`."""

    def __init__(self, sink: EventSink, observer: RequestObserver) -> None:
        self.sink = sink
        self.observer = observer
        self._counted_end = False

    def _count(self, event: RunEvent) -> None:
        kind = type(event)
        if kind is AgentTurnEnded:
            assert isinstance(event, AgentTurnEnded)
            self.observer.agent_message(event.agent)
        elif kind is RunEnded and not self._counted_end:
            assert isinstance(event, RunEnded)
            self._counted_end = True
            usage = event.usage
            self.observer.tokens(usage.prompt_tokens, usage.completion_tokens)
            self.observer.model_call(usage.started_calls)

    async def send(self, event: RunEvent) -> None:
        self._count(event)
        await self.sink.send(event)

    def offer(self, event: RunEvent) -> bool:
        # The token path: a type check more per token; a cancelled run's `RunEnded` is counted even
        # when the queue has no room for it.
        if type(event) is RunEnded:
            self._count(event)
        return self.sink.offer(event)
