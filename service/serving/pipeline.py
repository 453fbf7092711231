"""The one serving pipeline: every protocol's team runs go through `serve`.

The pipeline owns what every API shares: admission (the model, the bounds, a capacity slot), the
request's metrics observer, the run's deadline, the status committed only with the first event of a
stream, cancellation when the client goes away (`client_gone`, the same for both modes), and the end
of the request (`RequestRun.settle`: the outcome recorded once, the slot and the protocol's own
resources released, for a stream before its final bytes).

A protocol supplies only what is its own, as a `ProtocolCall`: its API name, the request turned into
a run (`prepare`: the task, the team, whatever it holds), its stream body (its encoder and writer
through `pump_events`) and its non-streamed body. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autogen_agentchat.messages import BaseChatMessage
from fastapi.responses import StreamingResponse

from service.runs.context import QueueSink
from service.runs.events import RunEnded, RunEvent
from service.runs.execute import Runner, RunRequest, execute_run
from service.serving.admission import admit
from service.serving.answer_format import answer_request
from service.serving.context import ServingContext
from service.serving.errors import outcome_of, run_error
from service.serving.observed import ObservedSink
from service.serving.request_run import RequestRun
from service.serving.run import run_to_end
from service.serving.stream import STREAM_MARGIN_S, AgentStreamingResponse, first_events
from service.workflows.registry import Workflow

logger = logging.getLogger("service.serving.pipeline")

ClientGoneWaiter = Callable[[], Awaitable[None]]


@dataclass
class Prepared:
    """A request made ready to run: the team, its task, the run's id and token cap."""

    runner: Runner
    task: Sequence[BaseChatMessage]
    run_id: str
    max_tokens: int | None = None
    # What `LOG_PROMPTS` logs of the task.
    prompt: list[Any] = field(default_factory=list)


class ProtocolCall(Protocol):
    """What one protocol supplies for one request (the pipeline does the rest)."""

    @property
    def api(self) -> str:
        """The protocol's registered name (`service.contract.protocols`): the `api` metric label."""

    @property
    def model(self) -> str: ...

    @property
    def stream(self) -> bool: ...

    async def admission(self) -> tuple[list[str], str]:
        """The texts that count against the size bounds, and the parameter named in a 400 (no slot
        is held yet: anything the request needs read first, such as stored items, is read here).

        Raises:
            OpenAIError: the request is invalid before any work (400; 503 store unavailable).
        """

    async def prepare(self, workflow: Workflow, run: RequestRun) -> Prepared:
        """The run of this request (a slot is held). The protocol may hold resources of its own:
        it sets `run.release`, called once when the request is settled.

        Raises:
            OpenAIError: the request cannot run (4xx, 503); CoreFunctionError (500).
        """

    def stream_body(
        self, queue: asyncio.Queue[RunEvent], first: list[RunEvent], run: RequestRun
    ) -> AsyncIterator[str]:
        """The SSE writes of the stream, after `first` (its encoder and writer in `pump_events`,
        which settles `run` before the last write)."""

    async def whole_body(self, events: list[RunEvent], ended: RunEnded) -> dict[str, Any]:
        """The non-streamed response of a finished run.

        Raises:
            OpenAIError: it cannot be made or stored (CoreFunctionError 500, 4xx/503).
        """


async def serve(
    call: ProtocolCall, ctx: ServingContext, client_gone: ClientGoneWaiter | None = None
) -> StreamingResponse | dict[str, Any]:
    """Run `call`'s team: a `StreamingResponse` of its events when `call.stream`, else its body.

    Raises:
        OpenAIError: 4xx invalid request, 404 unknown model, 503 at capacity, 502/504 upstream
            failure or deadline (before a stream's first byte), 500 (CoreFunctionError).
        ClientGone: the client went away before the answer (or a stream's first event).
    """
    run = RequestRun(ctx.metrics.request(call.model, call.stream, call.api))
    try:
        texts, param = await call.admission()
        workflow = admit(call.model, texts, ctx, param)
        run.slots = ctx.slots
        prepared = await call.prepare(workflow, run)
        settings = ctx.settings
        if settings.log_prompts:
            logger.info("prompt", extra={"model": call.model, "prompt": prepared.prompt})
        request = answer_request(
            prepared.runner,
            workflow.run_request(
                prepared.run_id,
                deadline_s=settings.workflow_timeout_s,
                max_tokens=prepared.max_tokens,
            ),
        )
        if call.stream:
            return await _open_stream(call, ctx, run, prepared, request, client_gone)
        events, ended = await run_to_end(
            prepared.runner, prepared.task, request, run, f"workflow:{call.model}", client_gone
        )
        body = await call.whole_body(events, ended)
        await run.settle("ok")
        return body
    except BaseException as exc:
        await run.close(outcome_of(exc))
        raise


async def _open_stream(
    call: ProtocolCall,
    ctx: ServingContext,
    run: RequestRun,
    prepared: Prepared,
    request: RunRequest,
    client_gone: ClientGoneWaiter | None,
) -> StreamingResponse:
    """Start the run as a task and wait for its first events: the stream's status is committed
    after them, so a run that fails before saying anything gets its real status.

    Raises:
        OpenAIError: the run failed before its first event (502/504/500). ClientGone.
    """
    sink = QueueSink(ctx.settings.stream_queue_size)
    work = execute_run(prepared.runner, prepared.task, request, ObservedSink(sink, run.observer), run.token)
    run.start(work, f"workflow:{call.model}", ctx.metrics)
    first = await first_events(sink.queue, ctx.settings.stream_keepalive_s, client_gone)
    if first and isinstance(first[-1], RunEnded):
        error = run_error(first[-1])
        if error is not None:  # raised: the error handler counts a CoreFunctionError
            raise error
    return AgentStreamingResponse(call.stream_body(sink.queue, first, run), on_close=run.close)


def stream_deadline_s(ctx: ServingContext) -> float:
    """A stream may outlive WORKFLOW_TIMEOUT_S by a margin: the run's last events after its deadline."""
    return ctx.settings.workflow_timeout_s + STREAM_MARGIN_S
