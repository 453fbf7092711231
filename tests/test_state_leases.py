"""Run locks as leases, and saves that a stalled Redis applies too late (issue: a dead holder's lock
must be free in seconds; a turn reported failed must never be stored later). Real SQLite and a real
`redis-server`, stalled with SIGSTOP as a hung or paused Redis would be."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.client import Pipeline

from service.state import (
    ResponseRecord,
    StateStore,
    StateStoreUnavailable,
    Turn,
    encode_state,
    open_state_store,
)
from service.state.lease import Lease
from tests.helpers.redis_server import RedisServer, requires_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=requires_redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    else:
        uri = request.getfixturevalue("redis_server").url
    opened = await open_state_store(uri, 3600)
    try:
        yield opened
    finally:
        await opened.close()


def record(response_id: str) -> ResponseRecord:
    return ResponseRecord(
        id=response_id, owner="o", model="m", created_at=int(time.time()), response={}, input_items=[]
    )


async def wait_until_taken(store: StateStore, key: str, within_s: float) -> float:
    started = time.monotonic()
    while True:
        lease = await Lease.take(store, key, 30)
        if lease is not None:
            await lease.release()
            return time.monotonic() - started
        assert time.monotonic() - started < within_s, f"{key} still held after {within_s} s"
        await asyncio.sleep(0.1)


async def test_a_lease_outlives_its_ttl_while_renewed_and_frees_at_release(store: StateStore) -> None:
    lease = await Lease.take(store, "conv:a", 0.9)
    assert lease is not None
    await asyncio.sleep(2.0)  # more than twice the TTL: renewed meanwhile
    assert await Lease.take(store, "conv:a", 30) is None and not lease.lost
    await lease.release()
    assert await wait_until_taken(store, "conv:a", 1.0) < 1.0


async def test_a_dead_holders_lease_is_free_within_its_ttl(store: StateStore) -> None:
    lease = await Lease.take(store, "conv:dead", 1.5)
    assert lease is not None
    assert lease._task is not None
    lease._task.cancel()  # the worker died: nobody renews it, nobody releases it
    waited = await wait_until_taken(store, "conv:dead", 5.0)
    assert waited <= 1.5 + 0.5


async def test_the_store_closing_stops_its_renewals(store: StateStore) -> None:
    lease = await Lease.take(store, "conv:closing", 0.6)
    assert lease is not None and lease._task is not None
    await store.stop_tasks()
    assert lease._task.done()


@requires_redis
async def test_a_lease_that_expired_in_a_redis_stall_is_lost_and_a_release_is_retried(
    redis_server: RedisServer,
) -> None:
    store = await open_state_store(redis_server.url, 3600)
    try:
        lease = await Lease.take(store, "conv:stall", 1.5)
        assert lease is not None
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(2.5)  # past the TTL: Redis expires the lock when it wakes
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        other = await Lease.take(store, "conv:stall", 30)
        assert other is not None
        deadline = time.monotonic() + 5
        while not lease.lost:
            assert time.monotonic() < deadline, "the renewal never noticed the lease was lost"
            await asyncio.sleep(0.1)
        await lease.release()  # must not free the other holder's lock
        assert await Lease.take(store, "conv:stall", 30) is None
        await other.release()

        # A release during a stall is retried once Redis answers again.
        held = await Lease.take(store, "conv:retry", 20)
        assert held is not None
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            release = asyncio.create_task(held.release())
            await asyncio.sleep(3)
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        await release
        assert await wait_until_taken(store, "conv:retry", 15.0) < 15.0  # not its 20 s TTL
    finally:
        await store.close()


@requires_redis
@pytest.mark.parametrize("stall_at", ["before the save", "before the transaction"])
async def test_a_save_that_redis_applies_after_the_caller_gave_up_is_not_applied(
    redis_server: RedisServer, stall_at: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_state_store(redis_server.url, 3600)
    pid = redis_server.proc.pid
    try:
        state, _ = encode_state({"x": 1}, 10_000)
        assert await store.save_turn(Turn(state=state, response=record("resp_before")))
        if stall_at == "before the save":
            os.kill(pid, signal.SIGSTOP)
        else:
            # Redis stops right after the save's last read: its MULTI/EXEC is sent to a stopped
            # Redis, which keeps it and would apply it when it wakes, long after the worker gave up.
            real_exists = Pipeline.exists

            async def exists_then_stall(self: Pipeline, *names: str) -> object:
                result = await real_exists(self, *names)  # type: ignore[misc]
                if any(str(name).startswith("autogen:state:fence:") for name in names):
                    os.kill(pid, signal.SIGSTOP)
                return result

            monkeypatch.setattr(Pipeline, "exists", exists_then_stall)
        stopped = time.monotonic()
        try:
            with pytest.raises(StateStoreUnavailable):
                await store.save_turn(Turn(state=state, response=record("resp_stalled")))
            assert time.monotonic() - stopped >= 4  # the worker gave up: the turn is reported failed
            await asyncio.sleep(1.0)  # the fence's budget is over by now
        finally:
            monkeypatch.undo()
            os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.5)  # Redis works through what it was sent while stopped
        assert await store.get_response("resp_stalled") is None
        assert await store.get_response("resp_before") is not None
        assert await store.save_turn(Turn(state=state, response=record("resp_after")))
    finally:
        await store.close()
