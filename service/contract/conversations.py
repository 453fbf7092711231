"""OpenAI Conversations API wire types (`/v1/conversations`, `client.conversations.*` in the `openai`
SDK): the request bodies and the objects returned. Items are the Responses API's input items."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.contract.responses import InputItem, Metadata, check_items

MAX_CONVERSATION_ITEMS_PER_CALL = 20


def check_conversation_items(value: Any) -> Any:
    """Conversation items: as `check_items`, and no `item_reference` (a conversation holds what was
    said; a reference is resolved in a response's `input` only)."""
    value = check_items(value)
    for index, item in enumerate(value if isinstance(value, list) else []):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            raise ValueError(
                f"item {index} is an `item_reference`: conversation items are messages (references are "
                "taken in the `input` of POST /v1/responses)"
            )
    return value


class CreateConversation(BaseModel):
    """The body of `POST /v1/conversations`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    items: Annotated[list[InputItem], Field(max_length=MAX_CONVERSATION_ITEMS_PER_CALL)] | None = None
    metadata: Metadata | None = None

    _check_items = field_validator("items", mode="before")(check_conversation_items)


class UpdateConversation(BaseModel):
    """The body of `POST /v1/conversations/{id}`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    metadata: Metadata


class CreateConversationItems(BaseModel):
    """The body of `POST /v1/conversations/{id}/items`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    items: Annotated[list[InputItem], Field(min_length=1, max_length=MAX_CONVERSATION_ITEMS_PER_CALL)]

    _check_items = field_validator("items", mode="before")(check_conversation_items)


class ConversationObject(BaseModel):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str] = Field(default_factory=dict)


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True
