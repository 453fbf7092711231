"""The shared state store: Redis (`STATE_STORE_URI=redis://...`), for several machines or pods.

Keys (prefix `autogen:state:`), each with the TTL of what it belongs to:
- `resp:<id>` a stored response (JSON), `state:<id>` a team state (of a response or a conversation);
- `conv:<id>` a hash (`owner`, `created_at`, `metadata`, `run`), `items:<id>` its items (a list of
  JSON), `index:<id>` item id -> position (a hash, for `after=` pagination);
- `ref:<item id>` every stored item once more, with its owner (`{"owner", "item"}` JSON), for
  `item_reference` input items;
- `lock:<key>` a run lock: `SET NX PX`, released by a compare-and-delete script.

A turn is written in one `MULTI`/`EXEC` transaction, under `WATCH` of its conversation so that a
conversation deleted meanwhile is not brought back. Redis must keep these keys: a memory-only Redis
with an eviction policy (`allkeys-*`, `volatile-*`) loses conversations under memory pressure or on
restart (docs/deploy.md).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError
from redis.retry import Retry

from service.state.store import (
    ConversationRecord,
    ConversationRun,
    Order,
    ResponseRecord,
    StateStore,
    StateStoreUnavailable,
    Turn,
    items_of,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
PREFIX = "autogen:state:"
SOCKET_TIMEOUT_S = 5.0
SAVE_BUDGET_S = SOCKET_TIMEOUT_S - 1.0
WATCH_RETRIES = 5
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_KINDS_OF_A_CONVERSATION = ("conv", "items", "index", "state")


def _key(kind: str, name: str) -> str:
    return f"{PREFIX}{kind}:{name}"


class RedisStateStore(StateStore):
    backend = "redis"

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        super().__init__(ttl_s)
        self.client = client
        self._unlock = client.register_script(_UNLOCK)
        self._renew = client.register_script(_RENEW)

    @classmethod
    async def open(cls, uri: str, ttl_s: int) -> RedisStateStore:
        client = aioredis.Redis.from_url(
            uri,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=30,
            # One immediate retry: a pooled connection a Redis restart left stale fails once.
            retry=Retry(NoBackoff(), 1),
        )
        store = cls(client, ttl_s)
        try:
            await store._call(client.ping())
        except BaseException:
            await store.close()
            raise
        return store

    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            return await operation
        except (RedisError, OSError) as exc:
            self.failed()
            logger.error("state store (redis) failed", extra={"reason": f"{type(exc).__name__}: {exc}"})
            raise StateStoreUnavailable(str(exc)) from exc

    async def _transaction(self, watch: list[str], body: Callable[[Pipeline], Awaitable[T]]) -> T:
        """`body(pipe)` under WATCH of `watch`: reads first, then `pipe.multi()` and the writes;
        retried when a watched key changed meanwhile."""
        for _ in range(WATCH_RETRIES):
            async with self.client.pipeline(transaction=True) as pipe:
                try:
                    if watch:
                        await pipe.watch(*watch)
                    return await body(pipe)
                except WatchError:
                    continue
        raise StateStoreUnavailable("too many concurrent changes")

    # --- responses ----------------------------------------------------------------------------
    async def get_response(self, response_id: str) -> ResponseRecord | None:
        text = await self._call(self.client.get(_key("resp", response_id)))
        return None if text is None else ResponseRecord.from_json(text)

    async def delete_response(self, response_id: str) -> bool:
        record = await self.get_response(response_id)
        refs = [] if record is None else [_key("ref", str(item["id"])) for item in items_of(record)]
        deleted = await self._call(
            self.client.delete(_key("resp", response_id), _key("state", response_id), *refs)
        )
        return bool(deleted)

    async def load_state(self, key: str) -> bytes | None:
        data = await self._call(self.client.get(_key("state", key)))
        return data if data is None or isinstance(data, bytes) else data.encode()

    # --- conversations ------------------------------------------------------------------------
    async def create_conversation(self, record: ConversationRecord, items: list[dict[str, Any]]) -> None:
        conversation = _key("conv", record.id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            conversation,
            mapping={
                "owner": record.owner,
                "created_at": str(record.created_at),
                "metadata": json.dumps(record.metadata),
                "run": record.run.to_json(),
            },
        )
        self._queue_items(pipe, record.id, 0, items)
        self._queue_renew(pipe, record.id)  # the items and their index expire with it
        self._queue_index(pipe, record.owner, items)
        await self._call(pipe.execute())

    def _queue_items(
        self, pipe: Pipeline, conversation_id: str, start: int, items: list[dict[str, Any]]
    ) -> None:
        if not items:
            return
        pipe.rpush(_key("items", conversation_id), *(json.dumps(item, ensure_ascii=False) for item in items))
        pipe.hset(
            _key("index", conversation_id),
            mapping={str(item["id"]): str(start + offset) for offset, item in enumerate(items)},
        )

    def _queue_index(self, pipe: Pipeline, owner: str, items: list[dict[str, Any]]) -> None:
        for item in items:
            entry = json.dumps({"owner": owner, "item": item}, ensure_ascii=False)
            pipe.set(_key("ref", str(item["id"])), entry, ex=self.ttl_s)

    def _queue_renew(self, pipe: Pipeline, conversation_id: str) -> None:
        for kind in _KINDS_OF_A_CONVERSATION:
            pipe.expire(_key(kind, conversation_id), self.ttl_s)

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(_key("conv", conversation_id))
        pipe.llen(_key("items", conversation_id))
        fields, count = await self._call(pipe.execute())
        if not fields:
            return None
        values = {key.decode(): value.decode() for key, value in fields.items()}
        return ConversationRecord(
            id=conversation_id,
            owner=values["owner"],
            created_at=int(values["created_at"]),
            metadata=json.loads(values["metadata"]),
            run=ConversationRun.from_json(values.get("run")),
            items=int(count),
        )

    async def update_metadata(self, conversation_id: str, metadata: dict[str, str]) -> bool:
        conversation = _key("conv", conversation_id)

        async def update(pipe: Pipeline) -> bool:
            if not await pipe.exists(conversation):
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(conversation, "metadata", json.dumps(metadata))
            self._queue_renew(pipe, conversation_id)
            await pipe.execute()
            return True

        return await self._call(self._transaction([conversation], update))

    async def delete_conversation(self, conversation_id: str) -> bool:
        item_ids = await self._call(self.client.hkeys(_key("index", conversation_id)))
        refs = [
            _key("ref", item_id.decode() if isinstance(item_id, bytes) else str(item_id))
            for item_id in item_ids
        ]
        if refs:
            await self._call(self.client.delete(*refs))
        deleted = await self._call(
            self.client.delete(*(_key(kind, conversation_id) for kind in _KINDS_OF_A_CONVERSATION))
        )
        return bool(deleted)

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]]) -> bool:
        conversation, listed = _key("conv", conversation_id), _key("items", conversation_id)

        async def append(pipe: Pipeline) -> bool:
            owner = await pipe.hget(conversation, "owner")
            if owner is None:
                return False
            count = int(await pipe.llen(listed))
            pipe.multi()  # type: ignore[no-untyped-call]
            self._queue_items(pipe, conversation_id, count, items)
            self._queue_index(pipe, owner.decode() if isinstance(owner, bytes) else str(owner), items)
            self._queue_renew(pipe, conversation_id)
            await pipe.execute()
            return True

        return await self._call(self._transaction([conversation, listed], append))

    async def list_items(
        self, conversation_id: str, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[dict[str, Any]], bool] | None:
        listed = _key("items", conversation_id)
        bound: int | None = None
        if after is not None:
            position = await self._call(self.client.hget(_key("index", conversation_id), after))
            if position is None:
                return None
            bound = int(position)
        if order == "asc":
            first = 0 if bound is None else bound + 1
            rows = await self._call(self.client.lrange(listed, first, first + limit))
        else:
            if bound is None:
                rows = await self._call(self.client.lrange(listed, -(limit + 1), -1))
            elif bound == 0:
                rows = []  # nothing is older than the first item (and LRANGE 0 -1 is the whole list)
            else:
                rows = await self._call(self.client.lrange(listed, max(0, bound - limit - 1), bound - 1))
            rows = list(reversed(rows))
        page = [json.loads(row) for row in rows[:limit]]
        return page, len(rows) > limit

    async def items_since(self, conversation_id: str, start: int, limit: int) -> list[dict[str, Any]]:
        rows = await self._call(self.client.lrange(_key("items", conversation_id), start, start + limit - 1))
        return [json.loads(row) for row in rows]

    async def get_item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        position = await self._call(self.client.hget(_key("index", conversation_id), item_id))
        if position is None:
            return None
        row = await self._call(self.client.lindex(_key("items", conversation_id), int(position)))
        return None if row is None else dict(json.loads(row))

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        wanted = list(dict.fromkeys(item_ids))
        if not wanted:
            return {}
        rows = await self._call(self.client.mget([_key("ref", item_id) for item_id in wanted]))
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for item_id, row in zip(wanted, rows, strict=True):
            if row is not None:
                entry = json.loads(row)
                found[item_id] = (str(entry["owner"]), dict(entry["item"]))
        return found

    # --- turns and locks ----------------------------------------------------------------------
    async def save_turn(self, turn: Turn) -> bool:
        conversation = turn.conversation
        watch = (
            [] if conversation is None else [_key("conv", conversation.id), _key("items", conversation.id)]
        )
        # A watched key that expires aborts EXEC (Redis >= 6.0.9): a save that a stalled Redis would
        # apply after SAVE_BUDGET_S, when this worker has given up and reported the turn failed, is
        # not applied. The budget is below the socket timeout, after which the worker gives up.
        fence = _key("fence", secrets.token_hex(8))
        await self._call(self.client.set(fence, b"1", px=int(SAVE_BUDGET_S * 1000)))
        watch.append(fence)

        async def save(pipe: Pipeline) -> bool:
            count = 0
            if not await pipe.exists(fence):
                self.failed()
                raise StateStoreUnavailable("the save came later than its budget: not applied")
            if conversation is not None:
                if not await pipe.exists(_key("conv", conversation.id)):
                    return False
                count = int(await pipe.llen(_key("items", conversation.id)))
            pipe.multi()  # type: ignore[no-untyped-call]
            if conversation is not None:
                self._queue_items(pipe, conversation.id, count, conversation.items)
                pipe.hset(_key("conv", conversation.id), "run", conversation.run.to_json())
                pipe.set(_key("state", conversation.id), turn.state, ex=self.ttl_s)
                self._queue_renew(pipe, conversation.id)
            response = turn.response
            if response is not None:
                pipe.set(_key("resp", response.id), response.to_json(), ex=self.ttl_s)
                self._queue_index(pipe, response.owner, items_of(response))
                if conversation is None:
                    pipe.set(_key("state", response.id), turn.state, ex=self.ttl_s)
            pipe.delete(fence)
            await pipe.execute()
            return True

        return await self._call(self._transaction(watch, save))

    async def try_lock(self, key: str, token: str, ttl_s: float) -> bool:
        acquired = await self._call(self.client.set(_key("lock", key), token, nx=True, px=int(ttl_s * 1000)))
        return bool(acquired)

    async def renew_lock(self, key: str, token: str, ttl_s: float) -> bool:
        renewed = await self._call(
            cast(Awaitable[Any], self._renew(keys=[_key("lock", key)], args=[token, int(ttl_s * 1000)]))
        )
        return bool(renewed)

    async def renew_conversation(self, conversation_id: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        self._queue_renew(pipe, conversation_id)
        renewed = await self._call(pipe.execute())
        return bool(renewed[0])

    async def unlock(self, key: str, token: str) -> None:
        await self._call(cast(Awaitable[Any], self._unlock(keys=[_key("lock", key)], args=[token])))

    async def close(self) -> None:
        try:
            await self.stop_tasks()
        finally:
            await self.client.aclose()
