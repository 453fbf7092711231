"""The Responses API's parts of the serving pipeline (`service.serving.pipeline`): a turn is
prepared (`service.serving.responses.turn`), run by the pipeline like every API's, and stored
before it is announced (`response.completed`, or the non-streamed body)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse

from service.contract.errors import OpenAIError
from service.contract.protocols import RESPONSES
from service.contract.responses import (
    ConversationField,
    CreateResponse,
    ResponseObject,
    TextConfig,
    TextFormat,
    new_id,
    now,
)
from service.encoders.responses import ResponsesEncoder
from service.observability.metrics import Outcome
from service.observability.tracing import traced
from service.runs.events import RunEnded, RunEvent
from service.serving.context import ServingContext
from service.serving.errors import CoreFunctionError, outcome_of
from service.serving.pipeline import ClientGoneWaiter, Prepared, serve, stream_deadline_s
from service.serving.request_run import RequestRun
from service.serving.responses.errors import store_unavailable
from service.serving.responses.references import resolve_item_references
from service.serving.responses.turn import ResponseTurn
from service.serving.serialize import handle_response
from service.serving.stream import pump_events
from service.state import StateStoreHandle, StateStoreUnavailable
from service.workflows.registry import Workflow

logger = logging.getLogger("service.serving.responses")


async def _save(turn: ResponseTurn, ended: RunEnded, response: ResponseObject) -> None:
    """Store the turn; an unreachable store is the client's 503."""
    try:
        await turn.save(ended, response)
    except StateStoreUnavailable:
        raise store_unavailable() from None


@dataclass
class ResponsesStreamWriter:
    """The Responses wire format of `pump_events`: the encoder's events, and the turn stored before
    `response.completed` is sent (a failure to store it is sent as `response.failed`)."""

    encoder: ResponsesEncoder
    turn: ResponseTurn

    def feed(self, event: RunEvent) -> list[str]:
        return self.encoder.feed(event)

    async def end(self, ended: RunEnded) -> tuple[list[str], Outcome]:
        events = self.encoder.close(ended)
        try:
            await _save(self.turn, ended, self.encoder.response())
        except OpenAIError as error:
            return [*events, *self.encoder.fail(error, ended)], outcome_of(error)
        return [*events, *self.encoder.terminal()], "ok"

    def error(self, error: OpenAIError) -> list[str]:
        return self.encoder.fail(error)


@traced
async def generate_responses_stream(
    queue: asyncio.Queue[RunEvent],
    writer: ResponsesStreamWriter,
    *,
    first: Sequence[RunEvent],
    run: RequestRun,
    model: str,
    keepalive_s: float,
    deadline_s: float,
    flush_interval_s: float,
) -> AsyncIterator[str]:
    """The SSE stream of a response (the loop shared with chat completions, `pump_events`)."""
    async for write in pump_events(
        queue,
        writer,
        first=first,
        run=run,
        keepalive_s=keepalive_s,
        deadline_s=deadline_s,
        flush_interval_s=flush_interval_s,
        preamble=2,  # response.created, response.in_progress
        model=model,
    ):
        yield write


@dataclass
class ResponsesCall:
    """One `POST /v1/responses`: its turn, prepared, run and stored through the pipeline."""

    body: CreateResponse
    ctx: ServingContext
    states: StateStoreHandle
    owner: str
    api: str = RESPONSES.name
    turn: ResponseTurn | None = None

    @property
    def model(self) -> str:
        return self.body.model

    @property
    def stream(self) -> bool:
        return bool(self.body.stream)

    async def admission(self) -> tuple[list[str], str]:
        # Item references become the stored items they name, for the bounds and for the turn.
        self.body = body = await resolve_item_references(
            self.body, self.states, self.owner, self.ctx.settings.max_messages
        )
        if body.previous_response_id is not None and body.conversation is not None:
            raise OpenAIError(
                400, "Send `previous_response_id` or `conversation`, not both.", param="previous_response_id"
            )
        if body.store is False and body.conversation is not None:
            raise OpenAIError(
                400, "A conversation stores its turns: `store: false` cannot be used with it.", param="store"
            )
        texts = [message.text() for message in body.messages()]
        if body.instructions:
            texts.append(body.instructions)
        return texts, "input"

    async def prepare(self, workflow: Workflow, run: RequestRun) -> Prepared:
        body = self.body
        store_on = body.store is not False
        conversation_id = body.conversation_id
        base = ResponseObject(
            id=new_id("resp"),
            created_at=now(),
            status="in_progress",
            model=body.model,
            instructions=body.instructions,
            previous_response_id=body.previous_response_id,
            conversation=ConversationField(id=conversation_id) if conversation_id else None,
            store=store_on,
            metadata=body.metadata or {},
            max_output_tokens=body.max_output_tokens,
            user=body.user,
            temperature=body.temperature,
            top_p=body.top_p,
            # The format the answer was asked in, echoed as the request gave it (validated already).
            text=TextConfig(format=TextFormat.model_validate(body.text["format"]))
            if body.answer_format is not None
            else TextConfig(),
        )
        turn = ResponseTurn(body, self.ctx, self.owner, store_on, base)
        self.turn = turn
        run.release = turn.release
        try:
            await turn.prepare(self.states)
        except StateStoreUnavailable:
            raise store_unavailable() from None
        except (OpenAIError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("could not prepare the response", extra={"model": body.model})
            raise CoreFunctionError("serve_autogen") from None
        assert turn.runner is not None
        prompt = [message.to_text() for message in turn.task] if self.ctx.settings.log_prompts else []
        return Prepared(turn.runner, turn.task, base.id, body.max_output_tokens, prompt)

    def stream_body(
        self, queue: asyncio.Queue[RunEvent], first: list[RunEvent], run: RequestRun
    ) -> AsyncIterator[str]:
        assert self.turn is not None
        settings = self.ctx.settings
        encoder = ResponsesEncoder(self.turn.base, emit=True, dump=handle_response)
        return generate_responses_stream(
            queue,
            ResponsesStreamWriter(encoder, self.turn),
            first=first,
            run=run,
            model=self.body.model,
            keepalive_s=settings.stream_keepalive_s,
            flush_interval_s=settings.stream_flush_interval_ms / 1000,
            deadline_s=stream_deadline_s(self.ctx),
        )

    async def whole_body(self, events: list[RunEvent], ended: RunEnded) -> dict[str, Any]:
        assert self.turn is not None
        encoder = ResponsesEncoder(self.turn.base, emit=False, dump=handle_response)
        try:
            for event in events:
                encoder.feed(event)
            response = encoder.response()
        except Exception:
            logger.exception("could not format the team's result", extra={"model": self.body.model})
            raise CoreFunctionError("create_non_streaming_response") from None
        await _save(self.turn, ended, response)
        body = handle_response(response)
        if self.ctx.settings.log_prompts:
            logger.info("completion", extra={"model": self.body.model, "completion": body["output"]})
        return body


@traced
async def serve_responses(
    body: CreateResponse,
    ctx: ServingContext,
    states: StateStoreHandle,
    owner: str,
    client_gone: ClientGoneWaiter | None = None,
) -> StreamingResponse | dict[str, Any]:
    """Make a response: one turn of the team named by `body.model` (see `turn`).

    Returns:
        An SSE `StreamingResponse` of Responses events when `body.stream`, else the response dict.

    Raises:
        OpenAIError: 400 invalid request, 404 unknown model or continuation, 409 busy or state that
            does not fit, 413 state too large, 503 at capacity or store unavailable, 502/504
            upstream failure or deadline (before the first byte of a stream).
        CoreFunctionError: HTTP 500 (logged with its cause, counted).
        ClientGone: the client went away before the answer (or a stream's first event).
    """
    return await serve(ResponsesCall(body, ctx, states, owner), ctx, client_gone)
