"""The Responses API below its routes: create a response (a team turn, streamed or not), read and
delete stored responses, and the conversations they append to.

A turn, in order: admission (the model, the bounds, a capacity slot: `service.serving.admission`);
the continuation it asks for (`previous_response_id` or `conversation`: found for this API key,
else 404) and its run lock (409 while another turn of the same conversation or response runs); a
fresh team, with the saved state loaded (`load_state`); the task (the new messages, or the person's
answer delivered to the agent that asked); the run (`service.runs.execute`, through the same stream
loop and non-streamed path as chat completions); then, for a run that ended with an answer and
`store` on, the team's state (`save_state`) and the records, in one transaction, before the
response is announced. The slot and the lock are released however the request ends; a paused team
(waiting for a person) holds neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autogen_agentchat.messages import BaseChatMessage, HandoffMessage, MultiModalMessage, TextMessage
from autogen_core import CancellationToken, Image
from fastapi.responses import StreamingResponse

from service.config import Settings
from service.contract.chat import ChatMessage
from service.contract.errors import OpenAIError, sanitize
from service.contract.responses import (
    ConversationDeleted,
    ConversationField,
    ConversationObject,
    CreateConversation,
    CreateConversationItems,
    CreateResponse,
    InputItem,
    InputMessage,
    InputText,
    ItemList,
    OutputText,
    ResponseDeleted,
    ResponseObject,
    StoredInputMessage,
    new_id,
    now,
)
from service.encoders.responses import ResponsesEncoder
from service.observability.metrics import Outcome, RequestObserver
from service.observability.tracing import traced
from service.runs.context import QueueSink
from service.runs.events import InputKind, RunEnded, RunEvent
from service.runs.execute import Runner, RunRequest, execute_run
from service.serving.admission import admit, check_bounds
from service.serving.answer_format import answer_request, with_answer_format
from service.serving.context import ServingContext
from service.serving.errors import CoreFunctionError
from service.serving.images import load_images, refuse_blind_team, responses_images
from service.serving.item_references import resolve_item_references
from service.serving.run import run_to_end
from service.serving.serialize import handle_response
from service.serving.stream import (
    STREAM_MARGIN_S,
    AgentStreamingResponse,
    StreamRun,
    open_stream,
    pump_events,
)
from service.serving.task import to_task
from service.state import (
    ConversationRecord,
    ConversationRun,
    ConversationTurn,
    PendingInput,
    ResponseRecord,
    StateCorrupt,
    StateStore,
    StateStoreHandle,
    StateStoreUnavailable,
    StateTooLarge,
    Turn,
    decode_state,
    encode_state,
)

logger = logging.getLogger("service.serving.responses")

# A run lock outlives its run's deadline by this much (the stream's margin, then the save).
LOCK_MARGIN_S = STREAM_MARGIN_S + 60.0
# Adding items holds the conversation's lock for one write.
ITEMS_LOCK_S = 30.0
PRODUCER_DONE_WAIT_S = 5.0
DEFAULT_PAGE = 20
MAX_PAGE = 100


# --------------------------------------------------------------------------------------- errors
def _kept_for(ttl_s: int) -> str:
    for unit, seconds in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if ttl_s >= seconds and ttl_s % seconds == 0:
            return f"{ttl_s // seconds} {unit}"
    return f"{ttl_s} seconds"


def not_found(kind: str, object_id: str, ttl_s: int, param: str | None = None) -> OpenAIError:
    """The same 404 for a missing, deleted, expired or another key's object (nothing is revealed)."""
    kept = f"{kind}s are kept for {_kept_for(ttl_s)}"
    if kind == "conversation":
        kept += " after their last change"
    return OpenAIError(
        404,
        f"No {kind} '{sanitize(object_id, 80)}' is stored for this API key: it never existed, was "
        f"deleted, or expired ({kept}).",
        param=param,
        code=f"{kind}_not_found",
    )


def store_unavailable() -> OpenAIError:
    return OpenAIError(
        503,
        "The state store is unavailable. Retry shortly.",
        code="state_store_unavailable",
        headers={"Retry-After": "1"},
    )


def busy(kind: str) -> OpenAIError:
    what = "turn of this conversation" if kind == "conversation" else "continuation of this response"
    return OpenAIError(
        409,
        f"Another {what} is running: one turn at a time. Retry when it has finished.",
        param="conversation" if kind == "conversation" else "previous_response_id",
        code="conversation_busy",
    )


def state_too_large(error: StateTooLarge) -> OpenAIError:
    return OpenAIError(
        413,
        f"The team's state after this turn is {error.size} bytes, above the limit of {error.limit} "
        "(STATE_MAX_BYTES): nothing was stored. Start a new conversation.",
        code="state_too_large",
    )


def state_incompatible() -> OpenAIError:
    return OpenAIError(
        409,
        "The saved state cannot be loaded into this model's team (its definition changed, or the "
        "stored state is damaged): start a new conversation.",
        code="state_incompatible",
    )


def _owner_of(record_owner: str, owner: str) -> bool:
    return secrets.compare_digest(record_owner, owner)


# ---------------------------------------------------------------------------------------- items
def stored_items(messages: Sequence[InputMessage]) -> list[dict[str, Any]]:
    """Input messages as stored and listed: each with an id, its text as one content part."""
    items = []
    for message in messages:
        text = message.text()
        part = OutputText(text=text) if message.role == "assistant" else InputText(text=text)
        stored = StoredInputMessage(id=new_id("msg"), role=message.role, content=[part])
        items.append(stored.model_dump(mode="json"))
    return items


def _item_role_and_text(item: dict[str, Any]) -> tuple[str, str] | None:
    """A stored message item's role and text (None for other items: reasoning, the team's answer)."""
    if item.get("type") != "message" or item.get("phase") == "final_answer":
        return None
    texts = [str(part.get("text", "")) for part in item.get("content", []) if isinstance(part, dict)]
    return str(item.get("role", "user")), "\n".join(texts)


def _messages(items: Sequence[InputItem]) -> list[InputMessage]:
    return [item for item in items if isinstance(item, InputMessage)]


def page(
    items: list[dict[str, Any]], *, after: str | None, limit: int, order: str
) -> tuple[list[dict[str, Any]], bool] | None:
    ordered = items if order == "asc" else list(reversed(items))
    start = 0
    if after is not None:
        positions = [index for index, item in enumerate(ordered) if item.get("id") == after]
        if not positions:
            return None
        start = positions[0] + 1
    return ordered[start : start + limit], start + limit < len(ordered)


def item_list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return ItemList(
        data=data,
        first_id=str(data[0]["id"]) if data else None,
        last_id=str(data[-1]["id"]) if data else None,
        has_more=has_more,
    ).model_dump(mode="json")


def check_page(limit: int, order: str) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise OpenAIError(400, f"limit must be between 1 and {MAX_PAGE}.", param="limit")
    if order not in ("asc", "desc"):
        raise OpenAIError(400, "order must be 'asc' or 'desc'.", param="order")


# ---------------------------------------------------------------------------------------- a turn
@dataclass
class _Turn:
    """One response being made: what it continues, what it holds, and how it is stored."""

    body: CreateResponse
    ctx: ServingContext
    observer: RequestObserver
    owner: str
    store_on: bool
    base: ResponseObject
    store: StateStore | None = None
    runner: Runner | None = None
    task: list[BaseChatMessage] = field(default_factory=list)
    input_items: list[dict[str, Any]] = field(default_factory=list)
    instructions: str | None = None  # in force after this turn
    previous: ResponseRecord | None = None
    conversation: ConversationRecord | None = None
    lock: tuple[str, str] | None = None
    slot_held: bool = False
    load_s: float | None = None

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    async def release(self) -> None:
        """Free the run lock and the capacity slot (idempotent)."""
        lock, self.lock = self.lock, None
        if lock is not None and self.store is not None:
            with contextlib.suppress(StateStoreUnavailable):  # logged; the lock expires by itself
                await self.store.unlock(*lock)
        if self.slot_held:
            self.slot_held = False
            self.ctx.slots.release()

    # --- preparing --------------------------------------------------------------------------
    async def prepare(self, states: StateStoreHandle) -> None:
        """Find what the turn continues, take its lock, and build the team and its task."""
        body = self.body
        ttl_s = self.settings.state_ttl_s
        previous_id, conversation_id = body.previous_response_id, body.conversation_id
        pending: PendingInput | None = None
        instructions_before: str | None = None
        state_key: str | None = None
        unread: list[dict[str, Any]] = []
        if self.store_on or previous_id or conversation_id:
            self.store = await states.get()
        if previous_id is not None:
            assert self.store is not None
            record = await self.store.get_response(previous_id)
            if record is None or not _owner_of(record.owner, self.owner):
                raise not_found("response", previous_id, ttl_s, "previous_response_id")
            if record.conversation_id is not None:
                raise OpenAIError(
                    400,
                    f"Response '{previous_id}' belongs to conversation '{record.conversation_id}': "
                    "continue it with `conversation`.",
                    param="previous_response_id",
                    code="invalid_continuation",
                )
            self._same_model(record.model, "previous_response_id")
            await self._lock(f"resp:{previous_id}", "response")
            self.previous = record
            pending, instructions_before, state_key = record.pending_input, record.instructions, previous_id
        elif conversation_id is not None:
            assert self.store is not None
            conversation = await self.store.get_conversation(conversation_id)
            if conversation is None or not _owner_of(conversation.owner, self.owner):
                raise not_found("conversation", conversation_id, ttl_s, "conversation")
            await self._lock(f"conv:{conversation_id}", "conversation")
            # Read again under the lock: a turn that just ended moved its head.
            conversation = await self.store.get_conversation(conversation_id)
            if conversation is None:
                raise not_found("conversation", conversation_id, ttl_s, "conversation")
            run = conversation.run
            if run.model is not None:
                self._same_model(run.model, "conversation")
            self.conversation = conversation
            pending, instructions_before = run.pending_input, run.instructions
            state_key = conversation_id if run.turns else None
            if conversation.items > run.seen:
                unread = await self.store.items_since(
                    conversation_id, run.seen, self.settings.max_messages + 1
                )
        messages = body.messages()
        self.input_items = stored_items(messages)
        self.instructions = body.instructions if body.instructions is not None else instructions_before
        unread_messages = [pair for pair in map(_item_role_and_text, unread) if pair is not None]
        check_bounds([text for _, text in unread_messages], self.ctx, "conversation")
        await self._build(state_key)
        images = responses_images(body)
        refuse_blind_team(self.runner, images)
        loaded = await load_images(images, self.settings)
        self.task = self._task(unread_messages, messages, pending, instructions_before, loaded)

    def _same_model(self, model: str, param: str) -> None:
        if model != self.body.model:
            raise OpenAIError(
                400,
                f"The {param.replace('_', ' ')} continues the team of model '{model}': send that model "
                "(a team's saved state belongs to its workflow).",
                param="model",
                code="model_mismatch",
            )

    async def _lock(self, key: str, kind: str) -> None:
        assert self.store is not None
        token = secrets.token_hex(16)
        ttl_s = self.settings.workflow_timeout_s + LOCK_MARGIN_S
        if not await self.store.try_lock(key, token, ttl_s):
            raise busy(kind)
        self.lock = (key, token)

    def _task(
        self,
        unread: list[tuple[str, str]],
        messages: list[InputMessage],
        pending: PendingInput | None,
        instructions_before: str | None,
        images: Mapping[str, Image],
    ) -> list[BaseChatMessage]:
        task: list[BaseChatMessage] = []
        instructions = self.body.instructions
        # The team remembers the instructions of earlier turns: they are sent again only when new.
        if instructions and instructions != instructions_before:
            task.append(TextMessage(source="system", content=instructions))
        said = [*unread, *((message.role, message.text()) for message in messages)]
        if pending is not None:
            answer = "\n\n".join(text for role, text in said if role == "user" and text)
            if not answer:
                raise OpenAIError(
                    400,
                    f"The team waits for an answer to {pending.agent}'s question: send it as a user "
                    "message in `input`.",
                    param="input",
                    code="input_required",
                )
            if pending.kind == InputKind.HANDOFF:
                task.append(HandoffMessage(source="user", target=pending.agent, content=answer))
            else:
                task.append(TextMessage(source=pending.agent, content=answer))
            return task
        chat = [ChatMessage.model_validate({"role": role, "content": text}) for role, text in unread]
        task.extend(to_task([*chat, *(message.as_chat() for message in messages)], images))
        if not any(
            isinstance(message, TextMessage | MultiModalMessage) and message.source == "user"
            for message in task
        ):
            raise OpenAIError(
                400, "`input` must contain a user message with text.", param="input", code="invalid_input"
            )
        return task

    async def _build(self, state_key: str | None) -> None:
        workflow = self.ctx.registry.get(self.body.model)
        assert workflow is not None  # admitted
        state: dict[str, Any] | None = None
        started = time.perf_counter()
        if state_key is not None:
            assert self.store is not None
            data = await self.store.load_state(state_key)
            if data is None:
                kind = "conversation" if self.conversation is not None else "response"
                param = "conversation" if self.conversation is not None else "previous_response_id"
                raise not_found(kind, state_key, self.settings.state_ttl_s, param)
            try:
                state = await asyncio.to_thread(decode_state, data, self.settings.state_max_bytes)
            except StateCorrupt as exc:
                logger.warning(
                    "saved state cannot be read", extra={"model": self.body.model, "reason": str(exc)}
                )
                raise state_incompatible() from None
        try:
            runner = workflow.build()
        except Exception:
            logger.exception("could not build the workflow", extra={"model": self.body.model})
            raise CoreFunctionError("serve_autogen") from None
        runner = with_answer_format(runner, self.body.answer_format, "text.format")
        if state is not None:
            try:
                await runner.load_state(state)
            except Exception as exc:
                logger.warning(
                    "saved state does not load into the workflow",
                    extra={"model": self.body.model, "reason": f"{type(exc).__name__}: {exc}"},
                )
                raise state_incompatible() from None
            self.load_s = time.perf_counter() - started
            self.ctx.metrics.state_seconds.labels("load").observe(self.load_s)
        self.runner = runner

    # --- storing ------------------------------------------------------------------------------
    async def save(self, ended: RunEnded, response: ResponseObject) -> None:
        """Store the finished turn (with `store` on): the team's state, the response, the
        conversation's new items, in one transaction.

        Raises:
            OpenAIError: 413 the state is above STATE_MAX_BYTES, 404 the conversation was deleted
                meanwhile, 503 the store failed. Nothing is stored then.
        """
        if not self.store_on:
            return
        assert self.store is not None and self.runner is not None
        started = time.perf_counter()
        state = await self.runner.save_state()
        try:
            data, size = await asyncio.to_thread(encode_state, state, self.settings.state_max_bytes)
        except StateTooLarge as exc:
            logger.warning(
                "team state above STATE_MAX_BYTES", extra={"model": self.body.model, "size": exc.size}
            )
            raise state_too_large(exc) from None
        request = ended.input_request
        pending = PendingInput(request.agent, request.prompt, str(request.kind)) if request else None
        response_dict = handle_response(response)
        conversation = self.conversation
        record = ResponseRecord(
            id=response.id,
            owner=self.owner,
            model=self.body.model,
            created_at=response.created_at,
            response=response_dict,
            input_items=self.input_items,
            instructions=self.instructions,
            pending_input=pending,
            conversation_id=conversation.id if conversation is not None else None,
        )
        turn = Turn(state=data, response=record)
        if conversation is not None:
            items = [*self.input_items, *response_dict["output"]]
            run = ConversationRun(
                model=self.body.model,
                seen=conversation.items + len(items),
                turns=conversation.run.turns + 1,
                instructions=self.instructions,
                pending_input=pending,
            )
            turn.conversation = ConversationTurn(conversation.id, items, run)
        if not await self.store.save_turn(turn):
            assert conversation is not None
            raise not_found("conversation", conversation.id, self.settings.state_ttl_s, "conversation")
        save_s = time.perf_counter() - started
        metrics = self.ctx.metrics
        metrics.state_seconds.labels("save").observe(save_s)
        metrics.state_bytes.observe(size)
        logger.info(
            "turn stored",
            extra={
                "model": self.body.model,
                "response_id": response.id,
                "previous_response_id": self.body.previous_response_id,
                "conversation_id": conversation.id if conversation is not None else None,
                "input_required": pending is not None,
                "state_bytes": size,
                "stored_bytes": len(data),
                "load_ms": round(self.load_s * 1000, 2) if self.load_s is not None else None,
                "save_ms": round(save_s * 1000, 2),
            },
        )


def _outcome(error: OpenAIError) -> Outcome:
    return "client_error" if error.status_code < 500 else "server_error"


@dataclass
class ResponsesStreamWriter:
    """The Responses wire format of `pump_events`: the encoder's events, and the turn stored before
    `response.completed` is sent (a failure to store it is sent as `response.failed`)."""

    encoder: ResponsesEncoder
    turn: _Turn
    run: StreamRun

    def feed(self, event: RunEvent) -> list[str]:
        return self.encoder.feed(event)

    async def end(self, ended: RunEnded) -> tuple[list[str], Outcome]:
        events = self.encoder.close(ended)
        producer = self.run.producer
        if producer is not None:  # the team is idle once its run returned: its state is whole
            await asyncio.wait({producer}, timeout=PRODUCER_DONE_WAIT_S)
        try:
            await self.turn.save(ended, self.encoder.response())
        except StateStoreUnavailable:
            return [*events, *self.encoder.fail(store_unavailable(), ended)], "server_error"
        except OpenAIError as error:
            return [*events, *self.encoder.fail(error, ended)], _outcome(error)
        return [*events, *self.encoder.terminal()], "ok"

    def error(self, error: OpenAIError) -> list[str]:
        return self.encoder.fail(error)


@traced
async def generate_responses_stream(
    queue: asyncio.Queue[RunEvent],
    writer: ResponsesStreamWriter,
    *,
    first: Sequence[RunEvent],
    observer: RequestObserver,
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
        observer=observer,
        keepalive_s=keepalive_s,
        deadline_s=deadline_s,
        flush_interval_s=flush_interval_s,
        preamble=2,  # response.created, response.in_progress
        model=model,
    ):
        yield write


@traced
async def serve_responses(
    body: CreateResponse, ctx: ServingContext, states: StateStoreHandle, owner: str
) -> StreamingResponse | dict[str, Any]:
    """Make a response: one turn of the team named by `body.model` (see the module docstring).

    Returns:
        An SSE `StreamingResponse` of Responses events when `body.stream`, else the response dict.

    Raises:
        OpenAIError: 400 invalid request, 404 unknown model or continuation, 409 busy or state that
            does not fit, 413 state too large, 503 at capacity or store unavailable, 502/504
            upstream failure or deadline (before the first byte of a stream).
        CoreFunctionError: HTTP 500 (logged with its cause, counted).
    """
    stream = bool(body.stream)
    observer = ctx.metrics.request(body.model, stream, "responses")
    body = await resolve_item_references(body, states, owner, ctx.settings.max_messages, observer)
    if body.previous_response_id is not None and body.conversation is not None:
        observer.finish("client_error")
        raise OpenAIError(
            400, "Send `previous_response_id` or `conversation`, not both.", param="previous_response_id"
        )
    store_on = body.store is not False
    if not store_on and body.conversation is not None:
        observer.finish("client_error")
        raise OpenAIError(
            400, "A conversation stores its turns: `store: false` cannot be used with it.", param="store"
        )
    texts = [message.text() for message in body.messages()]
    if body.instructions:
        texts.append(body.instructions)
    workflow = admit(body.model, texts, ctx, observer, "input")
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
    )
    turn = _Turn(body, ctx, observer, owner, store_on, base, slot_held=True)
    try:
        await turn.prepare(states)
    except StateStoreUnavailable:
        await turn.release()
        observer.finish("server_error")
        raise store_unavailable() from None
    except OpenAIError as error:
        await turn.release()
        observer.finish(_outcome(error))
        raise
    except asyncio.CancelledError:
        await turn.release()
        observer.finish("cancelled")
        raise
    except Exception:
        await turn.release()
        observer.finish("server_error")
        logger.exception("could not prepare the response", extra={"model": body.model})
        raise CoreFunctionError("serve_autogen") from None
    settings = ctx.settings
    if settings.log_prompts:
        logger.info("prompt", extra={"model": body.model, "prompt": [m.to_text() for m in turn.task]})
    assert turn.runner is not None
    request = answer_request(
        turn.runner,
        workflow.run_request(
            base.id,
            deadline_s=settings.workflow_timeout_s,
            stream_tokens=stream,
            max_tokens=body.max_output_tokens,
        ),
    )
    token = CancellationToken()
    if stream:
        return await _stream(turn, request, token)
    try:
        return await _complete(turn, request, token)
    finally:
        await turn.release()


async def _stream(turn: _Turn, request: RunRequest, token: CancellationToken) -> StreamingResponse:
    ctx, settings = turn.ctx, turn.ctx.settings
    assert turn.runner is not None
    sink = QueueSink(settings.stream_queue_size)
    # The run's slot is the stream's now: StreamRun releases it, the turn only its lock.
    turn.slot_held = False
    run = StreamRun(observer=turn.observer, slots=ctx.slots, metrics=ctx.metrics, token=token)
    try:
        first = await open_stream(
            run,
            execute_run(turn.runner, turn.task, request, sink, token, turn.observer),
            sink.queue,
            f"workflow:{turn.body.model}",
            settings.stream_keepalive_s,
        )
    except BaseException:
        await turn.release()
        raise
    encoder = ResponsesEncoder(turn.base, emit=True, dump=handle_response)
    body = generate_responses_stream(
        sink.queue,
        ResponsesStreamWriter(encoder, turn, run),
        first=first,
        observer=turn.observer,
        model=turn.body.model,
        keepalive_s=settings.stream_keepalive_s,
        flush_interval_s=settings.stream_flush_interval_ms / 1000,
        deadline_s=settings.workflow_timeout_s + STREAM_MARGIN_S,
    )

    async def close() -> None:
        try:
            await run.close()
        finally:
            await turn.release()

    return AgentStreamingResponse(body, on_close=close)


async def _complete(turn: _Turn, request: RunRequest, token: CancellationToken) -> dict[str, Any]:
    assert turn.runner is not None
    observer = turn.observer
    events, ended = await run_to_end(
        turn.runner, turn.task, request, token, observer, f"workflow:{turn.body.model}"
    )
    encoder = ResponsesEncoder(turn.base, emit=False, dump=handle_response)
    try:
        for event in events:
            encoder.feed(event)
        response = encoder.response()
    except Exception:
        logger.exception("could not format the team's result", extra={"model": turn.body.model})
        observer.finish("server_error")
        raise CoreFunctionError("create_non_streaming_response") from None
    try:
        await turn.save(ended, response)
    except StateStoreUnavailable:
        observer.finish("server_error")
        raise store_unavailable() from None
    except OpenAIError as error:
        observer.finish(_outcome(error))
        raise
    body = handle_response(response)
    if turn.settings.log_prompts:
        logger.info("completion", extra={"model": turn.body.model, "completion": body["output"]})
    observer.finish("ok")
    return body


# ------------------------------------------------------------------------------- stored objects
@contextlib.contextmanager
def _unavailable_as_503() -> Iterator[None]:
    """A state store that cannot be reached is the caller's 503 `state_store_unavailable`."""
    try:
        yield
    except StateStoreUnavailable:
        raise store_unavailable() from None


async def _store(states: StateStoreHandle) -> StateStore:
    with _unavailable_as_503():
        return await states.get()


async def _response_of(states: StateStoreHandle, response_id: str, owner: str) -> ResponseRecord:
    store = await _store(states)
    with _unavailable_as_503():
        record = await store.get_response(response_id)
    if record is None or not _owner_of(record.owner, owner):
        raise not_found("response", response_id, states.ttl_s)
    return record


async def get_response(states: StateStoreHandle, response_id: str, owner: str) -> dict[str, Any]:
    return (await _response_of(states, response_id, owner)).response


async def delete_response(states: StateStoreHandle, response_id: str, owner: str) -> dict[str, Any]:
    await _response_of(states, response_id, owner)
    with _unavailable_as_503():
        await (await _store(states)).delete_response(response_id)
    return ResponseDeleted(id=response_id).model_dump(mode="json")


async def list_input_items(
    states: StateStoreHandle, response_id: str, owner: str, *, after: str | None, limit: int, order: str
) -> dict[str, Any]:
    check_page(limit, order)
    record = await _response_of(states, response_id, owner)
    found = page(record.input_items, after=after, limit=limit, order=order)
    if found is None:
        raise OpenAIError(
            400, f"'{sanitize(after or '', 80)}' is not an input item of this response.", param="after"
        )
    return item_list(*found)


async def _conversation_of(states: StateStoreHandle, conversation_id: str, owner: str) -> ConversationRecord:
    store = await _store(states)
    with _unavailable_as_503():
        record = await store.get_conversation(conversation_id)
    if record is None or not _owner_of(record.owner, owner):
        raise not_found("conversation", conversation_id, states.ttl_s)
    return record


def _conversation_object(record: ConversationRecord) -> dict[str, Any]:
    return ConversationObject(
        id=record.id, created_at=record.created_at, metadata=record.metadata
    ).model_dump(mode="json")


async def create_conversation(
    body: CreateConversation, ctx: ServingContext, states: StateStoreHandle, owner: str
) -> dict[str, Any]:
    messages = _messages(body.items or [])
    check_bounds([message.text() for message in messages], ctx, "items")
    record = ConversationRecord(
        id=new_id("conv"), owner=owner, created_at=now(), metadata=body.metadata or {}, run=ConversationRun()
    )
    store = await _store(states)
    with _unavailable_as_503():
        await store.create_conversation(record, stored_items(messages))
    return _conversation_object(record)


async def get_conversation(states: StateStoreHandle, conversation_id: str, owner: str) -> dict[str, Any]:
    return _conversation_object(await _conversation_of(states, conversation_id, owner))


async def update_conversation(
    states: StateStoreHandle, conversation_id: str, owner: str, metadata: dict[str, str]
) -> dict[str, Any]:
    record = await _conversation_of(states, conversation_id, owner)
    with _unavailable_as_503():
        updated = await (await _store(states)).update_metadata(conversation_id, metadata)
    if not updated:
        raise not_found("conversation", conversation_id, states.ttl_s)
    record.metadata = metadata
    return _conversation_object(record)


async def delete_conversation(states: StateStoreHandle, conversation_id: str, owner: str) -> dict[str, Any]:
    await _conversation_of(states, conversation_id, owner)
    with _unavailable_as_503():
        await (await _store(states)).delete_conversation(conversation_id)
    return ConversationDeleted(id=conversation_id).model_dump(mode="json")


async def list_conversation_items(
    states: StateStoreHandle, conversation_id: str, owner: str, *, after: str | None, limit: int, order: str
) -> dict[str, Any]:
    check_page(limit, order)
    await _conversation_of(states, conversation_id, owner)
    with _unavailable_as_503():
        found = await (await _store(states)).list_items(
            conversation_id, after=after, limit=limit, order="asc" if order == "asc" else "desc"
        )
    if found is None:
        raise OpenAIError(
            400, f"'{sanitize(after or '', 80)}' is not an item of this conversation.", param="after"
        )
    return item_list(*found)


async def get_conversation_item(
    states: StateStoreHandle, conversation_id: str, item_id: str, owner: str
) -> dict[str, Any]:
    await _conversation_of(states, conversation_id, owner)
    with _unavailable_as_503():
        item = await (await _store(states)).get_item(conversation_id, item_id)
    if item is None:
        raise OpenAIError(
            404, f"No item '{sanitize(item_id, 80)}' in this conversation.", code="item_not_found"
        )
    return item


async def add_conversation_items(
    body: CreateConversationItems,
    ctx: ServingContext,
    states: StateStoreHandle,
    conversation_id: str,
    owner: str,
) -> dict[str, Any]:
    """Append messages to a conversation: the team reads them at its next turn (409 while a turn runs)."""
    record = await _conversation_of(states, conversation_id, owner)
    messages = _messages(body.items)
    check_bounds([message.text() for message in messages], ctx, "items")
    unread = record.items - record.run.seen + len(messages)
    if unread > ctx.settings.max_messages:
        raise OpenAIError(
            400,
            f"At most {ctx.settings.max_messages} items may wait for the team's next turn (MAX_MESSAGES).",
            param="items",
        )
    store = await _store(states)
    key, token = f"conv:{conversation_id}", secrets.token_hex(16)
    with _unavailable_as_503():
        if not await store.try_lock(key, token, ITEMS_LOCK_S):
            raise busy("conversation")
        try:
            items = stored_items(messages)
            if not await store.append_items(conversation_id, items):
                raise not_found("conversation", conversation_id, states.ttl_s)
        finally:
            await store.unlock(key, token)
    return item_list(items, False)
