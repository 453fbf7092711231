"""Run a workflow once and produce its run events: the same code for every API and both modes.

`execute_run` runs an AgentChat team (or single agent) with a `CancellationToken` and a deadline,
feeds the translator, and always ends with `RunEnded` (unless the run is cancelled from outside:
then nobody is listening). A UserProxyAgent or a handoff to the user ends the run normally, with
`RunEnded(reason=input_required)` and the question as the final answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, TaskResult, Team
from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from service.observability.run_trace import GEN_AI_INPUT_TOKENS, GEN_AI_OUTPUT_TOKENS, RunTrace, traced_run
from service.runs.agentchat import AgentChatTranslator
from service.runs.context import EventSink, RunContext, current_run_context
from service.runs.errors import failure_kind
from service.runs.events import (
    AgentTurnEnded,
    FailureKind,
    FinalAnswer,
    RunEnded,
    RunEndReason,
    RunEvent,
    RunStarted,
)
from service.runs.history import for_lone_agent
from service.runs.text import DEFAULT_MARKERS

logger = logging.getLogger("service.runs")

# After a failure or the deadline, the last events wait at most this long for room in the sink.
FINAL_SEND_TIMEOUT_S = 5.0
TURN_CAP_PREFIX = "Maximum number of turns"

Runner = Team | ChatAgent


@dataclass(frozen=True)
class RunRequest:
    """How to run one workflow for one request."""

    workflow: str
    run_id: str
    members: tuple[str, ...] = ()
    live_answer_agent: str | None = None
    markers: tuple[str, ...] = DEFAULT_MARKERS
    deadline_s: float = 300.0
    # The cap on turns the service imposed (MAX_AGENT_TURNS) where it is below the team's own.
    service_turn_cap: int | None = None
    max_tokens: int | None = None
    handoff_tools: frozenset[str] = frozenset()


@contextlib.asynccontextmanager
async def deadline(seconds: float, token: CancellationToken) -> AsyncIterator[None]:
    """`asyncio.timeout` that also cancels the run's token when it fires.

    AgentChat's `run_stream` waits (in its `finally`) for the team's runtime to go idle before the
    timeout's cancellation gets through; cancelling the token at the same instant stops the agents'
    model calls, so the deadline ends the run at once instead of when the team is done.
    """
    loop = asyncio.get_running_loop()
    when = loop.time() + seconds
    cancel_run = loop.call_at(when, token.cancel)
    try:
        async with asyncio.timeout_at(when):
            yield
    finally:
        cancel_run.cancel()


def _stopped_by_service_cap(result: TaskResult | None, cap: int | None) -> bool:
    reason = result.stop_reason if result is not None else None
    return cap is not None and bool(reason) and str(reason).startswith(f"{TURN_CAP_PREFIX} {cap} ")


def _end_reason(translator: AgentChatTranslator, answer: FinalAnswer, capped: bool) -> RunEndReason:
    if translator.input_request is not None:
        return RunEndReason.INPUT_REQUIRED
    if capped:
        return RunEndReason.TURN_CAP
    if answer.truncated:
        return RunEndReason.TOKEN_CAP
    return RunEndReason.COMPLETED


async def _send_last(sink: EventSink, events: Sequence[RunEvent]) -> None:
    """The closing events of a failed run: a client that stopped reading must not hold the run.
    (Its spans are closed already: the events go to the sink itself.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(FINAL_SEND_TIMEOUT_S):
            for event in events:
                await sink.send(event)


class _TracedSink:
    """The run's sink, ending an agent's `invoke_agent` span when its turn ends."""

    def __init__(self, sink: EventSink, trace: RunTrace) -> None:
        self._sink = sink
        self._trace = trace
        self.offer = sink.offer  # tokens and a cancelled run's end: no span to close

    async def send(self, event: RunEvent) -> None:
        if type(event) is AgentTurnEnded:
            self._trace.end_turn(event.agent)
        await self._sink.send(event)


async def execute_run(
    runner: Runner,
    task: Sequence[BaseChatMessage],
    request: RunRequest,
    sink: EventSink,
    token: CancellationToken,
) -> RunEnded:
    """Run `runner` on `task`, sending every run event to `sink`; return the `RunEnded` it sent.

    The run counts no metrics: its `RunEnded` carries the usage (tokens, model calls), and whoever
    serves it counts what passes through `sink`.

    Raises:
        asyncio.CancelledError: the run was cancelled from outside (the client went away); the
            token is cancelled first, so the agents' model calls stop at once, and
            `RunEnded(reason=cancelled)` is offered to the sink (added if it has room).
    """
    if isinstance(runner, AssistantAgent):
        task = for_lone_agent(task)
    translator = AgentChatTranslator(
        members=frozenset(request.members),
        task_message_ids=frozenset(id(message) for message in task),
        live_answer_agent=request.live_answer_agent,
        markers=request.markers,
        handoff_tools=request.handoff_tools,
    )
    await sink.send(RunStarted(request.run_id, request.workflow, request.members, request.live_answer_agent))
    try:
        with traced_run(request.workflow, request.run_id) as trace:
            context = RunContext(
                translator=translator,
                sink=_TracedSink(sink, trace),
                token=token,
                trace=trace,
                max_tokens=request.max_tokens,
            )
            context_token = current_run_context.set(context)
            try:
                result = await _run(runner, task, request, context)
            finally:
                current_run_context.reset(context_token)
            trace.workflow_span.set_attribute(GEN_AI_INPUT_TOKENS, translator.usage.prompt_tokens)
            trace.workflow_span.set_attribute(GEN_AI_OUTPUT_TOKENS, translator.usage.completion_tokens)
            trace.workflow_span.set_attribute("autogen.model_calls", translator.usage.calls)
            closing = translator.finish()
            answer = closing[-1]
            assert isinstance(answer, FinalAnswer)
            capped = _stopped_by_service_cap(result, request.service_turn_cap)
            ended = RunEnded(
                _end_reason(translator, answer, capped),
                translator.usage,
                input_request=translator.input_request,
            )
            await context.send_all([*closing, ended])
            return ended
    except asyncio.CancelledError:
        token.cancel()
        sink.offer(RunEnded(RunEndReason.CANCELLED, translator.usage))
        raise
    except TimeoutError:
        token.cancel()
        logger.warning("workflow deadline passed", extra={"model": request.workflow})
        ended = RunEnded(RunEndReason.DEADLINE, translator.usage)
    except Exception as exc:
        token.cancel()
        kind = failure_kind(exc)
        if kind is FailureKind.INTERNAL:
            logger.exception("workflow failed", extra={"model": request.workflow})
        else:
            logger.error(
                "upstream model failed: %s", str(exc).split(":", 1)[0], extra={"model": request.workflow}
            )
        ended = RunEnded(RunEndReason.FAILED, translator.usage, failure=kind)
    await _send_last(sink, [*translator.close_turns(), ended])
    return ended


async def _run(
    runner: Runner, task: Sequence[BaseChatMessage], request: RunRequest, context: RunContext
) -> TaskResult | None:
    result: TaskResult | None = None
    try:
        async with deadline(request.deadline_s, context.token):
            async for item in runner.run_stream(task=list(task), cancellation_token=context.token):
                if isinstance(item, TaskResult):
                    result = item
                else:
                    await context.send_all(context.translator.message(item))
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not context.stopped_for_input or (current is not None and current.cancelling()):
            raise
        # An agent asked for a person's input: the run stopped there on purpose.
    return result
