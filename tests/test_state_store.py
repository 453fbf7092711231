"""The state stores (`service/state`): the same behaviour from the embedded SQLite file and from a real
`redis-server`: records, items and their pages, atomic turns, locks, time to live, size bound."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.state import (
    ConversationRecord,
    ConversationRun,
    ConversationTurn,
    PendingInput,
    ResponseRecord,
    StateCorrupt,
    StateStore,
    StateStoreUnavailable,
    StateTooLarge,
    Turn,
    decode_state,
    encode_state,
    open_state_store,
)
from tests.helpers.redis_server import REDIS_SERVER, RedisServer, requires_redis
from tests.helpers.server import free_port

TTL_S = 3600


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


def _uri(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'state.sqlite3'}"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=requires_redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await open_state_store(_uri(request.param, tmp_path, request), TTL_S)
    try:
        yield opened
    finally:
        if opened.backend == "redis":
            await opened.client.flushdb()  # type: ignore[attr-defined]
        await opened.close()


def message(index: int, text: str = "hi") -> dict[str, Any]:
    return {
        "id": f"msg_{index}",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }


def response(response_id: str, owner: str = "key-a", conversation_id: str | None = None) -> ResponseRecord:
    return ResponseRecord(
        id=response_id,
        owner=owner,
        model="demo-team",
        created_at=int(time.time()),
        response={"id": response_id, "object": "response", "status": "completed"},
        input_items=[message(0)],
        instructions="be brief",
        pending_input=PendingInput("user_proxy", "Your name?", "user_proxy"),
        conversation_id=conversation_id,
    )


async def test_a_response_and_its_state_round_trip_and_are_deleted_together(store: StateStore) -> None:
    state, _ = encode_state({"planner": {"messages": ["hello"]}}, 10_000)
    assert await store.save_turn(Turn(state=state, response=response("resp_1")))
    record = await store.get_response("resp_1")
    assert record == response("resp_1")
    loaded = await store.load_state("resp_1")
    assert loaded is not None and decode_state(loaded, 10_000) == {"planner": {"messages": ["hello"]}}
    assert await store.delete_response("resp_1")
    assert await store.get_response("resp_1") is None and await store.load_state("resp_1") is None
    assert not await store.delete_response("resp_1")


async def test_conversation_items_pages_in_both_orders(store: StateStore) -> None:
    record = ConversationRecord(id="conv_1", owner="key-a", created_at=1, metadata={"topic": "x"})
    await store.create_conversation(record, [message(index) for index in range(3)])
    assert await store.append_items("conv_1", [message(index) for index in range(3, 5)])
    got = await store.get_conversation("conv_1")
    assert got is not None and got.items == 5 and got.metadata == {"topic": "x"} and got.owner == "key-a"

    async def ids(**kwargs: Any) -> tuple[list[str], bool]:
        found = await store.list_items("conv_1", **kwargs)
        assert found is not None
        return [item["id"] for item in found[0]], found[1]

    assert await ids(after=None, limit=2, order="asc") == (["msg_0", "msg_1"], True)
    assert await ids(after="msg_1", limit=2, order="asc") == (["msg_2", "msg_3"], True)
    assert await ids(after="msg_3", limit=2, order="asc") == (["msg_4"], False)
    assert await ids(after=None, limit=2, order="desc") == (["msg_4", "msg_3"], True)
    assert await ids(after="msg_3", limit=2, order="desc") == (["msg_2", "msg_1"], True)
    assert await ids(after="msg_1", limit=5, order="desc") == (["msg_0"], False)
    assert await ids(after=None, limit=10, order="asc") == ([f"msg_{i}" for i in range(5)], False)
    assert await store.list_items("conv_1", after="msg_404", limit=2, order="asc") is None
    assert [item["id"] for item in await store.items_since("conv_1", 3, 10)] == ["msg_3", "msg_4"]
    assert (await store.get_item("conv_1", "msg_2")) == message(2)
    assert await store.get_item("conv_1", "msg_9") is None
    assert await store.update_metadata("conv_1", {"topic": "y"})
    updated = await store.get_conversation("conv_1")
    assert updated is not None and updated.metadata == {"topic": "y"}


async def test_a_turn_appends_moves_the_head_and_replaces_the_state(store: StateStore) -> None:
    await store.create_conversation(ConversationRecord(id="conv_2", owner="o", created_at=1), [message(0)])
    for turn in (1, 2):
        state, _ = encode_state({"turn": turn}, 10_000)
        run = ConversationRun(model="demo-team", seen=1 + 2 * turn, turns=turn, instructions="i")
        saved = await store.save_turn(
            Turn(
                state=state,
                response=response(f"resp_c{turn}", conversation_id="conv_2"),
                conversation=ConversationTurn("conv_2", [message(10 * turn), message(10 * turn + 1)], run),
            )
        )
        assert saved
    conversation = await store.get_conversation("conv_2")
    assert conversation is not None and conversation.items == 5
    assert conversation.run == ConversationRun(model="demo-team", seen=5, turns=2, instructions="i")
    loaded = await store.load_state("conv_2")
    assert loaded is not None and decode_state(loaded, 10_000) == {"turn": 2}
    # A response of a conversation keeps no state of its own: the conversation holds it.
    assert await store.load_state("resp_c2") is None and await store.get_response("resp_c2") is not None
    listed = await store.list_items("conv_2", after=None, limit=10, order="asc")
    assert listed is not None and [item["id"] for item in listed[0]] == [
        "msg_0",
        "msg_10",
        "msg_11",
        "msg_20",
        "msg_21",
    ]


async def test_a_turn_of_a_deleted_conversation_stores_nothing(store: StateStore) -> None:
    await store.create_conversation(ConversationRecord(id="conv_3", owner="o", created_at=1), [])
    assert await store.delete_conversation("conv_3")
    state, _ = encode_state({"x": 1}, 10_000)
    turn = Turn(
        state=state,
        response=response("resp_gone", conversation_id="conv_3"),
        conversation=ConversationTurn("conv_3", [message(1)], ConversationRun(model="m", seen=1, turns=1)),
    )
    assert not await store.save_turn(turn)
    assert await store.get_response("resp_gone") is None
    assert await store.get_conversation("conv_3") is None and await store.load_state("conv_3") is None
    assert await store.list_items("conv_3", after=None, limit=5, order="asc") == ([], False)
    assert not await store.append_items("conv_3", [message(2)])
    assert not await store.update_metadata("conv_3", {"a": "b"})


async def test_a_run_lock_has_one_holder_until_released_or_expired(store: StateStore) -> None:
    assert await store.try_lock("conv:a", "first", 30)
    assert not await store.try_lock("conv:a", "second", 30)
    await store.unlock("conv:a", "second")  # not its holder: nothing happens
    assert not await store.try_lock("conv:a", "third", 30)
    await store.unlock("conv:a", "first")
    assert await store.try_lock("conv:a", "fourth", 0.2)
    await asyncio.sleep(0.4)  # a dead holder's lock expires
    assert await store.try_lock("conv:a", "fifth", 30)
    assert await store.try_lock("conv:b", "other key", 30)


async def test_concurrent_lock_attempts_have_exactly_one_winner(store: StateStore) -> None:
    won = await asyncio.gather(*(store.try_lock("conv:race", f"t{index}", 30) for index in range(8)))
    assert sorted(won) == [False] * 7 + [True]


async def test_expired_objects_are_gone(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    for kind in ("sqlite", "redis"):
        if kind == "redis" and REDIS_SERVER is None:  # pragma: no cover - redis-server missing
            continue
        store = await open_state_store(_uri(kind, tmp_path / kind, request), 1)
        try:
            state, _ = encode_state({"x": 1}, 10_000)
            await store.save_turn(Turn(state=state, response=response("resp_old")))
            await store.create_conversation(
                ConversationRecord(id="conv_old", owner="o", created_at=1), [message(0)]
            )
            assert await store.get_response("resp_old") is not None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and await store.get_response("resp_old") is not None:
                await asyncio.sleep(0.2)
            assert await store.get_response("resp_old") is None, kind
            assert await store.load_state("resp_old") is None, kind
            assert await store.get_conversation("conv_old") is None, kind
        finally:
            await store.close()


def test_the_size_bound_is_on_the_states_json() -> None:
    state = {"text": "x" * 5000}
    data, size = encode_state(state, 6000)
    assert size > 5000 and len(data) < size  # stored compressed
    with pytest.raises(StateTooLarge) as caught:
        encode_state(state, 4096)
    assert caught.value.size == size and caught.value.limit == 4096
    with pytest.raises(StateCorrupt, match="format"):
        decode_state(b"{}", 6000)


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (b"garbage", "format"),
        (b"z1" + b"not zlib at all", "zlib"),
        (b"z1" + zlib.compress(b'["a", "list"]'), "JSON object"),
        (b"z1" + zlib.compress(b"{not json"), "JSON"),
        (b"z1" + zlib.compress(b'{"a":' * 100_000 + b"1" + b"}" * 100_000), "JSON"),
        (b"z1" + zlib.compress(b'{"a":1}')[:-3], "truncated"),
        # A zlib bomb: 194 KB that inflate to 200 MB; decompression stops at the bound.
        (b"z1" + zlib.compress(b'{"a":"' + b"x" * 200_000_000 + b'"}', 9), "inflates past"),
    ],
    ids=["garbage", "bad-zlib", "json-list", "not-json", "deep-nesting", "truncated", "zlib-bomb"],
)
def test_corrupt_or_oversized_stored_state_is_refused_not_inflated(stored: bytes, reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(StateCorrupt, match=reason):
        decode_state(stored, 8 * 1024 * 1024)
    assert time.perf_counter() - started < 5  # bounded work (6.5 s and 200 MB before)


async def test_a_lease_is_renewed_only_by_its_holder_and_frees_when_not_renewed(store: StateStore) -> None:
    assert await store.try_lock("conv:lease", "holder", 0.6)
    for _ in range(3):  # renewed past its first expiry
        await asyncio.sleep(0.3)
        assert await store.renew_lock("conv:lease", "holder", 0.6)
    assert not await store.try_lock("conv:lease", "other", 30)
    assert not await store.renew_lock("conv:lease", "other", 30)  # not its holder
    deadline = time.monotonic() + 5
    while not await store.try_lock("conv:lease", "next", 30):  # the holder stopped renewing
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert not await store.renew_lock("conv:lease", "holder", 30)  # lost: it may not take it back


async def test_a_turn_start_renews_its_conversation(store: StateStore) -> None:
    await store.create_conversation(ConversationRecord(id="conv_r", owner="o", created_at=1), [message(0)])
    assert await store.renew_conversation("conv_r")
    assert not await store.renew_conversation("conv_missing")
    assert await store.delete_conversation("conv_r")
    assert not await store.renew_conversation("conv_r")


async def test_desc_pages_after_the_oldest_item_are_empty(store: StateStore) -> None:
    await store.create_conversation(
        ConversationRecord(id="conv_p", owner="o", created_at=1), [message(index) for index in range(3)]
    )
    assert await store.list_items("conv_p", after="msg_0", limit=2, order="desc") == ([], False)
    assert await store.list_items("conv_p", after="msg_2", limit=5, order="asc") == ([], False)


@requires_redis
async def test_every_redis_key_of_a_conversation_created_with_items_expires(redis_url: str) -> None:
    store = await open_state_store(redis_url, 60)
    try:
        await store.create_conversation(
            ConversationRecord(id="conv_ttl", owner="o", created_at=1), [message(0), message(1)]
        )
        client = store.client  # type: ignore[attr-defined]
        keys = await client.keys("autogen:state:*conv_ttl")
        assert {key.decode().split(":")[2] for key in keys} == {"conv", "items", "index"}
        for key in keys:
            assert 0 < await client.ttl(key) <= 60, key
    finally:
        await client.flushdb()
        await store.close()


async def test_expired_rows_are_purged_from_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = await open_state_store(f"sqlite:///{path}", 1)
    try:
        state, _ = encode_state({"x": 1}, 10_000)
        await store.save_turn(Turn(state=state, response=response("resp_a")))
        await asyncio.sleep(1.2)
        store._next_purge = 0.0  # type: ignore[attr-defined]  # the next write purges
        await store.save_turn(Turn(state=state, response=response("resp_b")))
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert [row[0] for row in db.execute("SELECT id FROM responses")] == ["resp_b"]
        assert [row[0] for row in db.execute("SELECT id FROM states")] == ["resp_b"]


async def test_an_unreachable_redis_is_a_clear_unavailable_error() -> None:
    with pytest.raises(StateStoreUnavailable):
        await open_state_store(f"redis://127.0.0.1:{free_port()}/0", TTL_S)


async def test_an_unwritable_sqlite_path_is_a_clear_unavailable_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateStoreUnavailable):
        await open_state_store(f"sqlite:///{blocker / 'state.sqlite3'}", TTL_S)
