"""The run a piece of code is serving: reached by the agents' model clients and input functions.

A `RunContext` lives in a context variable for the duration of one run. AgentChat's runtime starts
its tasks from the caller's context, so the model clients, called deep inside the runtime, find it:
they stream tokens into it, report each call's usage, and read the request's `max_tokens`. A
UserProxyAgent's input function finds it too, and stops the run for a person's answer instead of
reading the server's stdin.

Every run event goes out through `send`, one path: the translator's events, in order, into the
run's sink (a bounded queue for a stream, a list otherwise). The run layer counts nothing for HTTP
metrics: whoever serves the run wraps the sink to count (`service.serving.observed`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from service.observability.run_trace import RunTrace
from service.runs.agentchat import AgentChatTranslator, message_text
from service.runs.events import RunEvent
from service.runs.text import clean_text


class EventSink(Protocol):
    """Where a run's events go."""

    async def send(self, event: RunEvent) -> None: ...

    def offer(self, event: RunEvent) -> bool:
        """Add `event` if there is room, without waiting; whether it was added."""


class ListSink:
    """Keeps every event (a run whose answer is returned whole)."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []

    async def send(self, event: RunEvent) -> None:
        self.events.append(event)

    def offer(self, event: RunEvent) -> bool:
        self.events.append(event)
        return True


class QueueSink:
    """A bounded queue between the run and its stream: the run waits when the client reads slowly."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[RunEvent] = asyncio.Queue(maxsize=maxsize)

    async def send(self, event: RunEvent) -> None:
        if self.queue.full():
            await self.queue.put(event)
        else:
            self.queue.put_nowait(event)

    def offer(self, event: RunEvent) -> bool:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True


@dataclass
class RunContext:
    """One run's connection to the agents' model clients and input functions; `trace` holds the
    run's open spans (given when the run starts, for the model clients' `chat` spans)."""

    translator: AgentChatTranslator
    sink: EventSink
    token: CancellationToken
    trace: RunTrace | None = None
    max_tokens: int | None = None
    _stopped_for_input: bool = field(default=False, repr=False)

    async def send(self, event: RunEvent) -> None:
        await self.sink.send(event)

    async def send_all(self, events: list[RunEvent]) -> None:
        for event in events:
            await self.send(event)

    def offer_token(self, agent: str, text: str) -> list[RunEvent]:
        """A model token of `agent`, from its model client while the model streams (the hot path,
        no coroutine per token): its events go straight into the sink while it has room; the
        ones that did not fit are returned, for the caller to `send` (waiting for room)."""
        events = self.translator.token(agent, text)  # TextDelta or ThoughtDelta, after an AgentTurnStarted
        offer = self.sink.offer
        while events and offer(events[0]):
            del events[0]
        return events

    async def model_call_starts(self) -> None:
        """A model call of the run starts: the run goes on (what was held back is shown)."""
        events = self.translator.call_started()
        if events:
            await self.send_all(events)

    def model_call_started(self) -> None:
        """A model client starts a call (counted in the run's usage, whether it finishes or not)."""
        self.translator.usage.started_calls += 1

    async def model_called(
        self, agent: str, model: str, prompt_tokens: int, completion_tokens: int, finish_reason: str
    ) -> None:
        await self.send_all(
            self.translator.model_call(agent, model, prompt_tokens, completion_tokens, finish_reason)
        )

    @property
    def stopped_for_input(self) -> bool:
        return self._stopped_for_input

    async def stop_for_input(self, agent: str, told: BaseChatMessage | None = None) -> NoReturn:
        """End the run here: `agent` waits for a person. Nothing waits on the server for the
        answer; the caller sends it with the next request (a new run, or a resumed one).

        `told`: the last message another agent sent `agent`, when it knows it: its text is the
        question (the run's events may not have caught up with the team yet when the agent asks;
        how far behind they are depends on the agent runtime). The request's own messages are not."""
        translator = self.translator
        question = ""
        if told is not None and id(told) not in translator.task_message_ids:
            question = clean_text(message_text(told), translator.markers)
        await self.send_all(translator.requested_input(agent, question or None))
        self._stopped_for_input = True
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.token.link_future(waiting)
        self.token.cancel()  # the run stops as if cancelled; the executor knows why
        await waiting
        raise asyncio.CancelledError  # not reached: the token cancelled `waiting`


current_run_context: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "current_run_context", default=None
)


def input_function(
    agent: str, told: Callable[[], BaseChatMessage | None] | None = None
) -> Callable[[str, CancellationToken | None], Awaitable[str]]:
    """The input function the service gives every UserProxyAgent: never reads stdin, never blocks.
    `told` gives the last message another agent sent it (see `RunContext.stop_for_input`)."""

    async def ask_the_caller(prompt: str, cancellation_token: CancellationToken | None) -> str:
        run = current_run_context.get()
        if run is None:
            raise RuntimeError(f"{agent} asked for input outside a served run")
        await run.stop_for_input(agent, told() if told is not None else None)

    return ask_the_caller
