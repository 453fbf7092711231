"""The routes' work on stored objects: read and delete responses, list their input items; create,
read, update and delete conversations, list, add and read their items. Everything belongs to the API
key that made it (another key gets the same 404 as a missing object)."""

from __future__ import annotations

import secrets
from typing import Any

from service.contract.conversations import (
    ConversationDeleted,
    ConversationObject,
    CreateConversation,
    CreateConversationItems,
)
from service.contract.errors import OpenAIError, sanitize
from service.contract.responses import ResponseDeleted, new_id, now
from service.serving.admission import check_bounds
from service.serving.context import ServingContext
from service.serving.responses.errors import busy, not_found, owns, unavailable_as_503
from service.serving.responses.paging import check_page, input_messages, item_list, page, stored_items
from service.state import ConversationRecord, ConversationRun, ResponseRecord, StateStore, StateStoreHandle

# Adding items holds the conversation's lock for one write.
ITEMS_LOCK_S = 30.0


async def _store(states: StateStoreHandle) -> StateStore:
    with unavailable_as_503():
        return await states.get()


async def _response_of(states: StateStoreHandle, response_id: str, owner: str) -> ResponseRecord:
    store = await _store(states)
    with unavailable_as_503():
        record = await store.get_response(response_id)
    if record is None or not owns(record.owner, owner):
        raise not_found("response", response_id, states.ttl_s)
    return record


async def get_response(states: StateStoreHandle, response_id: str, owner: str) -> dict[str, Any]:
    return (await _response_of(states, response_id, owner)).response


async def delete_response(states: StateStoreHandle, response_id: str, owner: str) -> dict[str, Any]:
    await _response_of(states, response_id, owner)
    with unavailable_as_503():
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
    with unavailable_as_503():
        record = await store.get_conversation(conversation_id)
    if record is None or not owns(record.owner, owner):
        raise not_found("conversation", conversation_id, states.ttl_s)
    return record


def _conversation_object(record: ConversationRecord) -> dict[str, Any]:
    return ConversationObject(
        id=record.id, created_at=record.created_at, metadata=record.metadata
    ).model_dump(mode="json")


async def create_conversation(
    body: CreateConversation, ctx: ServingContext, states: StateStoreHandle, owner: str
) -> dict[str, Any]:
    messages = input_messages(body.items or [])
    check_bounds([message.text() for message in messages], ctx, "items")
    record = ConversationRecord(
        id=new_id("conv"), owner=owner, created_at=now(), metadata=body.metadata or {}, run=ConversationRun()
    )
    store = await _store(states)
    with unavailable_as_503():
        await store.create_conversation(record, stored_items(messages))
    return _conversation_object(record)


async def get_conversation(states: StateStoreHandle, conversation_id: str, owner: str) -> dict[str, Any]:
    return _conversation_object(await _conversation_of(states, conversation_id, owner))


async def update_conversation(
    states: StateStoreHandle, conversation_id: str, owner: str, metadata: dict[str, str]
) -> dict[str, Any]:
    record = await _conversation_of(states, conversation_id, owner)
    with unavailable_as_503():
        updated = await (await _store(states)).update_metadata(conversation_id, metadata)
    if not updated:
        raise not_found("conversation", conversation_id, states.ttl_s)
    record.metadata = metadata
    return _conversation_object(record)


async def delete_conversation(states: StateStoreHandle, conversation_id: str, owner: str) -> dict[str, Any]:
    await _conversation_of(states, conversation_id, owner)
    with unavailable_as_503():
        await (await _store(states)).delete_conversation(conversation_id)
    return ConversationDeleted(id=conversation_id).model_dump(mode="json")


async def list_conversation_items(
    states: StateStoreHandle, conversation_id: str, owner: str, *, after: str | None, limit: int, order: str
) -> dict[str, Any]:
    check_page(limit, order)
    await _conversation_of(states, conversation_id, owner)
    with unavailable_as_503():
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
    with unavailable_as_503():
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
    messages = input_messages(body.items)
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
    with unavailable_as_503():
        if not await store.try_lock(key, token, ITEMS_LOCK_S):
            raise busy("conversation")
        try:
            items = stored_items(messages)
            if not await store.append_items(conversation_id, items):
                raise not_found("conversation", conversation_id, states.ttl_s)
        finally:
            await store.unlock(key, token)
    return item_list(items, False)
