"""Responses `item_reference` input items: the stored item each one points at, put in its place.

Clients that keep their history as item ids send `{"type": "item_reference", "id": "msg_…"}` instead of
an item they received earlier (the Vercel AI SDK's OpenAI provider does so for every earlier answer
and reasoning item while `store` is on). A reference resolves against the items this service stored
for the same API key: the input and output items of its stored responses and its conversations' items
(`StateStore.get_items`). A message becomes that message again (the team's answer: an assistant
message); a reasoning item stays a reasoning item (skipped: it is the team's activity). Another key's
item is answered exactly like a missing one.
"""

from __future__ import annotations

import secrets
from typing import Any

from service.contract.errors import OpenAIError, sanitize
from service.contract.responses import CreateResponse, InputItem, InputMessage, InputReasoning, ItemReference
from service.serving.responses.errors import store_unavailable
from service.state import StateStoreHandle, StateStoreUnavailable


def _as_input(item: dict[str, Any]) -> InputItem | None:
    """A stored item as the input item it stands for (None: a kind that cannot be input)."""
    kind = item.get("type")
    if kind == "reasoning":
        return InputReasoning(type="reasoning")
    if kind != "message":
        return None
    parts = item.get("content", [])
    texts = (
        [str(part.get("text", "")) for part in parts if isinstance(part, dict)]
        if isinstance(parts, list)
        else []
    )
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        return None
    return InputMessage(role=role, content="\n".join(texts))


def _unknown(index: int, item_id: str) -> OpenAIError:
    return OpenAIError(
        400,
        f"Input item {index} refers to item '{sanitize(item_id, 80)}', which is not stored for this API "
        "key: it never existed, was deleted or expired, or was made with `store: false`. Send the item "
        "itself instead of a reference.",
        param=f"input.{index}.id",
        code="item_not_found",
    )


async def resolve_item_references(
    body: CreateResponse,
    states: StateStoreHandle,
    owner: str,
    max_references: int,
) -> CreateResponse:
    """`body` with every `item_reference` of `input` replaced by the item it names (one store read).

    Raises:
        OpenAIError: 400 an unknown (or another key's) item, or more than `max_references`
            references; 503 the state store is unavailable.
    """
    if isinstance(body.input, str):
        return body
    references = [(index, item) for index, item in enumerate(body.input) if isinstance(item, ItemReference)]
    if not references:
        return body
    if len(references) > max_references:
        raise OpenAIError(
            400,
            f"Too many item references: at most {max_references} (MAX_MESSAGES).",
            param="input",
        )
    try:
        store = await states.get()
        found = await store.get_items([reference.id for _, reference in references])
    except StateStoreUnavailable:
        raise store_unavailable() from None
    resolved: list[InputItem] = list(body.input)
    for index, reference in references:
        entry = found.get(reference.id)
        if entry is None or not secrets.compare_digest(entry[0], owner):
            raise _unknown(index, reference.id)
        item = _as_input(entry[1])
        if item is None:
            raise OpenAIError(
                400,
                f"Input item {index} refers to a stored item of type "
                f"'{sanitize(str(entry[1].get('type')), 40)}', which cannot be input.",
                param=f"input.{index}.id",
                code="unsupported_item",
            )
        resolved[index] = item
    return body.model_copy(update={"input": resolved})
