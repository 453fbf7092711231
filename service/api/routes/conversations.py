"""`/v1/conversations`: create, read, update (metadata), delete a conversation; list, add and read
its items. A response created with `conversation` runs the conversation's team from its saved state
and appends its input and output items. Same protections and ownership as `/v1/responses`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from service.api.deps import (
    STORED_ERRORS,
    After,
    ContextDep,
    IdPath,
    Limit,
    Order,
    OwnerDep,
    StatesDep,
    admit_chat_request,
    admit_read_request,
)
from service.contract.conversations import (
    ConversationDeleted,
    ConversationObject,
    CreateConversation,
    CreateConversationItems,
    UpdateConversation,
)
from service.contract.responses import ItemList
from service.serving.responses import stored
from service.serving.responses.paging import DEFAULT_PAGE

router = APIRouter(tags=["conversations"])
_WRITE = [Depends(admit_chat_request)]
_READ = [Depends(admit_read_request)]


@router.post(
    "/v1/conversations",
    dependencies=_WRITE,
    response_model=ConversationObject,
    responses=STORED_ERRORS,
    summary="Create a conversation",
)
async def create_conversation(
    body: CreateConversation, ctx: ContextDep, states: StatesDep, owner: OwnerDep
) -> dict[str, Any]:
    """A new conversation, optionally with its first items (up to 20 messages: the team reads them
    at the first turn) and metadata."""
    return await stored.create_conversation(body, ctx, states, owner)


@router.get(
    "/v1/conversations/{conversation_id}",
    dependencies=_READ,
    response_model=ConversationObject,
    responses=STORED_ERRORS,
    summary="Retrieve a conversation",
)
async def retrieve_conversation(
    conversation_id: IdPath, states: StatesDep, owner: OwnerDep
) -> dict[str, Any]:
    return await stored.get_conversation(states, conversation_id, owner)


@router.post(
    "/v1/conversations/{conversation_id}",
    dependencies=_WRITE,
    response_model=ConversationObject,
    responses=STORED_ERRORS,
    summary="Update a conversation's metadata",
)
async def update_conversation(
    conversation_id: IdPath, body: UpdateConversation, states: StatesDep, owner: OwnerDep
) -> dict[str, Any]:
    return await stored.update_conversation(states, conversation_id, owner, body.metadata)


@router.delete(
    "/v1/conversations/{conversation_id}",
    dependencies=_READ,
    response_model=ConversationDeleted,
    responses=STORED_ERRORS,
    summary="Delete a conversation, its items and its team's saved state",
)
async def delete_conversation(conversation_id: IdPath, states: StatesDep, owner: OwnerDep) -> dict[str, Any]:
    return await stored.delete_conversation(states, conversation_id, owner)


@router.get(
    "/v1/conversations/{conversation_id}/items",
    dependencies=_READ,
    response_model=ItemList,
    responses=STORED_ERRORS,
    summary="List a conversation's items",
)
async def list_items(
    conversation_id: IdPath,
    states: StatesDep,
    owner: OwnerDep,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
    order: Order = "desc",
) -> dict[str, Any]:
    return await stored.list_conversation_items(
        states, conversation_id, owner, after=after, limit=limit, order=order
    )


@router.post(
    "/v1/conversations/{conversation_id}/items",
    dependencies=_WRITE,
    response_model=ItemList,
    responses=STORED_ERRORS,
    summary="Add messages to a conversation (read by the team at its next turn)",
)
async def create_items(
    conversation_id: IdPath,
    body: CreateConversationItems,
    ctx: ContextDep,
    states: StatesDep,
    owner: OwnerDep,
) -> dict[str, Any]:
    return await stored.add_conversation_items(body, ctx, states, conversation_id, owner)


@router.get(
    "/v1/conversations/{conversation_id}/items/{item_id}",
    dependencies=_READ,
    responses=STORED_ERRORS,
    summary="Retrieve one item of a conversation",
)
async def retrieve_item(
    conversation_id: IdPath, item_id: IdPath, states: StatesDep, owner: OwnerDep
) -> dict[str, Any]:
    return await stored.get_conversation_item(states, conversation_id, item_id, owner)
