"""Stored input items (as listed and read back) and their pages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.contract.errors import OpenAIError
from service.contract.responses import (
    InputItem,
    InputMessage,
    InputText,
    ItemList,
    OutputText,
    StoredInputMessage,
    new_id,
)

DEFAULT_PAGE = 20
MAX_PAGE = 100


def stored_items(messages: Sequence[InputMessage]) -> list[dict[str, Any]]:
    """Input messages as stored and listed: each with an id, its text as one content part."""
    items = []
    for message in messages:
        text = message.text()
        part = OutputText(text=text) if message.role == "assistant" else InputText(text=text)
        stored = StoredInputMessage(id=new_id("msg"), role=message.role, content=[part])
        items.append(stored.model_dump(mode="json"))
    return items


def item_role_and_text(item: dict[str, Any]) -> tuple[str, str] | None:
    """A stored message item's role and text (None for other items: reasoning, the team's answer)."""
    if item.get("type") != "message" or item.get("phase") == "final_answer":
        return None
    texts = [str(part.get("text", "")) for part in item.get("content", []) if isinstance(part, dict)]
    return str(item.get("role", "user")), "\n".join(texts)


def input_messages(items: Sequence[InputItem]) -> list[InputMessage]:
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
