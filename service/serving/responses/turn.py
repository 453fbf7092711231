"""One turn of the Responses API being prepared and stored.

Preparing, in order (after admission): the continuation the request asks for
(`previous_response_id` or `conversation`: found for this API key, else 404) and its run lock (409
while another turn of the same conversation or response runs); a fresh team, with the saved state
loaded (`load_state`); the task (the new messages, or the person's answer delivered to the agent that
asked). Storing, for a run that ended with an answer and `store` on: the team's state
(`save_state`) and the records, in one transaction, before the response is announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autogen_agentchat.messages import BaseChatMessage, HandoffMessage, MultiModalMessage, TextMessage
from autogen_core import Image

from service.config import Settings
from service.contract.chat import ChatMessage
from service.contract.errors import OpenAIError
from service.contract.responses import CreateResponse, InputMessage, ResponseObject
from service.runs.events import InputKind, RunEnded
from service.runs.execute import Runner
from service.serving.admission import check_bounds
from service.serving.answer_format import with_answer_format
from service.serving.context import ServingContext
from service.serving.errors import CoreFunctionError
from service.serving.images import load_images, refuse_blind_team, responses_images
from service.serving.responses.errors import busy, not_found, owns, state_incompatible, state_too_large
from service.serving.responses.paging import item_role_and_text, stored_items
from service.serving.serialize import handle_response
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
    StateTooLarge,
    Turn,
    decode_state,
    encode_state,
)
from service.state.lease import Lease

logger = logging.getLogger("service.serving.responses")


@dataclass
class ResponseTurn:
    """One response being made: what it continues, what it holds, and how it is stored."""

    body: CreateResponse
    ctx: ServingContext
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
    lock: Lease | None = None
    load_s: float | None = None
    # A Swarm whose last run ended handing off outside the team (HandoffTermination): the agent
    # that handed off, to which the next turn goes back.
    handed_off_by: str | None = None

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    async def release(self) -> None:
        """Free the run lock (idempotent; the pipeline frees the capacity slot)."""
        lock, self.lock = self.lock, None
        if lock is not None:
            await lock.release()

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
            if record is None or not owns(record.owner, self.owner):
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
            if conversation is None or not owns(conversation.owner, self.owner):
                raise not_found("conversation", conversation_id, ttl_s, "conversation")
            await self._lock(f"conv:{conversation_id}", "conversation")
            # Read again under the lock (a turn that just ended moved its head), and renew its time
            # to live: the conversation must outlive the turn that runs now.
            conversation = await self.store.get_conversation(conversation_id)
            if conversation is None or not await self.store.renew_conversation(conversation_id):
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
        unread_messages = [pair for pair in map(item_role_and_text, unread) if pair is not None]
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
        lease = await Lease.take(self.store, key, self.settings.lock_lease_s)
        if lease is None:
            raise busy(kind)
        self.lock = lease

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
        if pending is None and self.handed_off_by is not None:
            # AgentChat resumes such a Swarm only from a handoff to one of its members.
            pending = PendingInput(self.handed_off_by, "", InputKind.HANDOFF)
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
        self.handed_off_by = handed_out_of_swarm(state)
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
        if self.lock is not None and self.lock.lost:
            # Another turn may hold the conversation now: storing this one would fork it.
            raise busy("conversation" if conversation is not None else "response")
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


def handed_out_of_swarm(state: Mapping[str, Any] | None) -> str | None:
    """The agent whose handoff to someone outside the team ended a Swarm's last run (None for any
    other saved state), read from the Swarm manager's saved message thread."""
    agents = state.get("agent_states") if state else None
    if not isinstance(agents, dict):
        return None
    for name, agent_state in agents.items():
        if isinstance(agent_state, dict) and agent_state.get("type") == "SwarmManagerState":
            members = set(agents) - {name}
            for message in reversed(agent_state.get("message_thread") or []):
                if isinstance(message, dict) and message.get("type") == "HandoffMessage":
                    handed_out = message.get("target") not in members
                    return str(message.get("source")) if handed_out else None
    return None
