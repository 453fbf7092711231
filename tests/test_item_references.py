"""Responses `item_reference` input items (issue 21, 6a): a reference resolves to the stored item of the
same API key (a response's input and output items, a conversation's items); anything else is a clear
400 naming the item. Real app over the ASGI transport, the official `openai` SDK, both state stores.
(The Vercel AI SDK, which sends them: `tests/test_clients_sdks.py`.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from service.app import create_app
from service.state import ResponseRecord, Turn, open_state_store
from tests.helpers.app import make_settings, running_app
from tests.helpers.redis_server import RedisServer, requires_redis

KEY_A, KEY_B = "sk-ref-alpha", "sk-ref-bravo"


@asynccontextmanager
async def service(tmp_path: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        data_dir=tmp_path / "data", direct_model="on", api_keys=f"{KEY_A},{KEY_B}", **overrides
    )
    async with running_app(create_app(settings)) as http:
        yield http


def sdk(http: httpx.AsyncClient, key: str = KEY_A) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)


def ref(item_id: str) -> dict[str, str]:
    return {"type": "item_reference", "id": item_id}


async def check_references_resolve(http: httpx.AsyncClient) -> None:
    alice = sdk(http)
    first = await alice.responses.create(model="direct", input="first")
    # The AI SDK's second turn: the first question again, the earlier output items by reference.
    history: list[Any] = [
        {"role": "user", "content": "first"},
        *(ref(item.id) for item in first.output if item.id),
        {"role": "user", "content": "second"},
    ]
    second = await alice.responses.create(model="direct", input=history, store=False)
    # `direct` numbers the turns it sees: the referenced answer is the conversation's second turn.
    assert second.output_text.startswith("Answer (turn 3)"), second.output_text
    # A stored input item resolves too (the user's message, by its id).
    [stored_input] = (await alice.responses.input_items.list(first.id)).data
    again = await alice.responses.create(model="direct", input=[ref(stored_input.id)], store=False)
    assert again.output_text.startswith("Answer (turn 1)")
    # A conversation's items resolve as well.
    conversation = await alice.conversations.create(items=[{"role": "user", "content": "kept"}])
    [kept] = (await alice.conversations.items.list(conversation.id)).data
    assert kept.id is not None
    from_conversation = await alice.responses.create(
        model="direct", input=[ref(kept.id), {"role": "user", "content": "and?"}], store=False
    )
    assert from_conversation.output_text.startswith("Answer (turn 2)")

    # Another key's item is answered like one that never existed, naming the item.
    bob = sdk(http, KEY_B)
    answer_id = next(item.id for item in first.output if item.type == "message")
    messages = []
    for item_id in (answer_id, "msg_" + "0" * 48):
        with pytest.raises(openai.BadRequestError) as refused:
            await bob.responses.create(
                model="direct", input=[{"role": "user", "content": "x"}, ref(item_id)], store=False
            )
        body = refused.value.body
        assert isinstance(body, dict)
        assert body["param"] == "input.1.id" and body["code"] == "item_not_found"
        messages.append(refused.value.message.replace(item_id, "<id>"))
    assert messages[0] == messages[1]
    # A deleted response's items no longer resolve.
    await alice.responses.delete(first.id)
    with pytest.raises(openai.BadRequestError):
        await alice.responses.create(model="direct", input=[ref(answer_id)], store=False)


async def test_item_references_resolve_for_their_owner_only(tmp_path: Path) -> None:
    async with service(tmp_path) as http:
        await check_references_resolve(http)


@requires_redis
async def test_item_references_resolve_with_the_redis_store(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as redis_server:
        async with service(tmp_path, state_store_uri=redis_server.url) as http:
            await check_references_resolve(http)


async def test_too_many_references_and_unknown_item_types_are_refused(tmp_path: Path) -> None:
    async with service(tmp_path, max_messages=3) as http:
        too_many = [ref(f"msg_{index}") for index in range(4)]
        response = await http.post(
            "/v1/responses",
            json={"model": "direct", "input": too_many},
            headers={"Authorization": f"Bearer {KEY_A}"},
        )
        assert response.status_code == 400 and response.json()["error"]["param"] == "input"
        call = {"type": "function_call_output", "call_id": "c1", "output": "42"}
        response = await http.post(
            "/v1/responses",
            json={"model": "direct", "input": [call]},
            headers={"Authorization": f"Bearer {KEY_A}"},
        )
        assert response.status_code == 400
        assert "function_call_output" in response.json()["error"]["message"]
        assert "item_reference" in response.json()["error"]["message"]


async def test_the_store_keeps_items_by_id_and_forgets_them_with_their_response(tmp_path: Path) -> None:
    store = await open_state_store(f"sqlite:///{tmp_path / 'state.sqlite3'}", 3600)
    try:
        record = ResponseRecord(
            id="resp_1",
            owner="alice",
            model="m",
            created_at=0,
            response={"output": [{"id": "msg_out", "type": "message", "role": "assistant", "content": []}]},
            input_items=[{"id": "msg_in", "type": "message", "role": "user", "content": []}],
        )
        assert await store.save_turn(Turn(state=b"z1", response=record))
        found = await store.get_items(["msg_in", "msg_out", "msg_none"])
        assert {key: owner for key, (owner, _) in found.items()} == {"msg_in": "alice", "msg_out": "alice"}
        await store.delete_response("resp_1")
        assert await store.get_items(["msg_in", "msg_out"]) == {}
    finally:
        await store.close()


async def test_conversation_items_may_not_be_references(tmp_path: Path) -> None:
    async with service(tmp_path) as http:
        headers = {"Authorization": f"Bearer {KEY_A}"}
        response = await http.post("/v1/conversations", json={"items": [ref("msg_1")]}, headers=headers)
        assert response.status_code == 400 and "item_reference" in response.json()["error"]["message"]
