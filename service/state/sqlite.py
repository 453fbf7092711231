"""The embedded state store: one SQLite file, shared by the workers of one machine, no server.

Every operation is one plain function run on the store's own thread (a one-thread executor that
owns the connection), so the event loop never waits on disk, and a transaction always runs to its
end once started, even when the request that asked for it is cancelled: a turn is stored whole or
not at all, and the operations of one worker run in the order they were asked (a lock released
after a save is released after it). Between workers and processes SQLite's own locking (WAL mode,
`busy_timeout`) serialises the writes.

Expired rows are never read (every query checks `expires_at`) and are deleted at most once a
minute per worker, by the next write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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
BUSY_TIMEOUT_MS = 10_000
PURGE_INTERVAL_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS states (
    id TEXT PRIMARY KEY, data BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at INTEGER NOT NULL, metadata TEXT NOT NULL,
    run TEXT NOT NULL, items INTEGER NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    conversation_id TEXT NOT NULL, position INTEGER NOT NULL, item_id TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (conversation_id, position));
CREATE UNIQUE INDEX IF NOT EXISTS items_by_id ON items (conversation_id, item_id);
CREATE TABLE IF NOT EXISTS locks (
    key TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS item_refs (
    item_id TEXT PRIMARY KEY, owner TEXT NOT NULL, data TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS item_refs_expiry ON item_refs (expires_at);
CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at);
CREATE INDEX IF NOT EXISTS states_expiry ON states (expires_at);
CREATE INDEX IF NOT EXISTS conversations_expiry ON conversations (expires_at);
"""


def sqlite_path(uri: str) -> Path:
    """`sqlite:///relative/path` or `sqlite:////absolute/path` -> the file's path."""
    return Path(uri.removeprefix("sqlite:///"))


class SqliteStateStore(StateStore):
    backend = "sqlite"

    def __init__(self, path: Path, ttl_s: int) -> None:
        super().__init__(ttl_s)
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-sqlite")
        self._db: sqlite3.Connection | None = None
        self._next_purge = 0.0

    @classmethod
    async def open(cls, uri: str, ttl_s: int) -> SqliteStateStore:
        store = cls(sqlite_path(uri), ttl_s)
        try:
            await store._call(store._connect)
        except BaseException:
            await store.close()
            raise
        return store

    # --- plumbing -------------------------------------------------------------------------------
    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except (sqlite3.Error, OSError) as exc:
            self.failed()
            logger.error("state store (sqlite) failed", extra={"reason": f"{type(exc).__name__}: {exc}"})
            raise StateStoreUnavailable(str(exc)) from exc

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "the store is not open"
        return self._db

    def _write(self, function: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run `function(db, now)` in one write transaction (and purge expired rows now and then)."""
        db = self.db
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = function(db, now)
            if now >= self._next_purge:
                self._next_purge = now + PURGE_INTERVAL_S
                self._purge(db, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    @staticmethod
    def _purge(db: sqlite3.Connection, now: float) -> None:
        db.execute(
            "DELETE FROM items WHERE conversation_id IN (SELECT id FROM conversations WHERE expires_at <= ?)",
            (now,),
        )
        for table in ("conversations", "responses", "states", "locks", "item_refs"):
            db.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))  # noqa: S608 (fixed names)

    def _expiry(self, now: float) -> float:
        return now + self.ttl_s

    # --- responses ----------------------------------------------------------------------------
    async def get_response(self, response_id: str) -> ResponseRecord | None:
        def read() -> str | None:
            row = self.db.execute(
                "SELECT record FROM responses WHERE id = ? AND expires_at > ?", (response_id, time.time())
            ).fetchone()
            return None if row is None else str(row[0])

        text = await self._call(read)
        return None if text is None else ResponseRecord.from_json(text)

    async def delete_response(self, response_id: str) -> bool:
        def delete(db: sqlite3.Connection, now: float) -> bool:
            row = db.execute("SELECT record FROM responses WHERE id = ?", (response_id,)).fetchone()
            if row is not None:
                ids = [(str(item["id"]),) for item in items_of(ResponseRecord.from_json(row[0]))]
                db.executemany("DELETE FROM item_refs WHERE item_id = ?", ids)
            found = db.execute(
                "DELETE FROM responses WHERE id = ? AND expires_at > ?", (response_id, now)
            ).rowcount
            db.execute("DELETE FROM states WHERE id = ?", (response_id,))
            return bool(found)

        return await self._call(self._write, delete)

    async def load_state(self, key: str) -> bytes | None:
        def read() -> bytes | None:
            row = self.db.execute(
                "SELECT data FROM states WHERE id = ? AND expires_at > ?", (key, time.time())
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._call(read)

    # --- conversations ------------------------------------------------------------------------
    async def create_conversation(self, record: ConversationRecord, items: list[dict[str, Any]]) -> None:
        def create(db: sqlite3.Connection, now: float) -> None:
            db.execute(
                "INSERT INTO conversations (id, owner, created_at, metadata, run, items, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.owner,
                    record.created_at,
                    json.dumps(record.metadata),
                    record.run.to_json(),
                    0,
                    self._expiry(now),
                ),
            )
            self._append(db, record.id, 0, items)
            self._index(db, record.owner, items, self._expiry(now))

        await self._call(self._write, create)

    @staticmethod
    def _append(
        db: sqlite3.Connection, conversation_id: str, start: int, items: list[dict[str, Any]]
    ) -> None:
        db.executemany(
            "INSERT INTO items (conversation_id, position, item_id, data) VALUES (?, ?, ?, ?)",
            [
                (conversation_id, start + offset, str(item["id"]), json.dumps(item, ensure_ascii=False))
                for offset, item in enumerate(items)
            ],
        )
        db.execute("UPDATE conversations SET items = items + ? WHERE id = ?", (len(items), conversation_id))

    @staticmethod
    def _index(db: sqlite3.Connection, owner: str, items: list[dict[str, Any]], expiry: float) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO item_refs (item_id, owner, data, expires_at) VALUES (?, ?, ?, ?)",
            [(str(item["id"]), owner, json.dumps(item, ensure_ascii=False), expiry) for item in items],
        )

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        def read() -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = self.db.execute(
                "SELECT owner, created_at, metadata, run, items FROM conversations "
                "WHERE id = ? AND expires_at > ?",
                (conversation_id, time.time()),
            ).fetchone()
            return row

        row = await self._call(read)
        if row is None:
            return None
        owner, created_at, metadata, run, items = row
        return ConversationRecord(
            id=conversation_id,
            owner=owner,
            created_at=int(created_at),
            metadata=json.loads(metadata),
            run=ConversationRun.from_json(run),
            items=int(items),
        )

    async def update_metadata(self, conversation_id: str, metadata: dict[str, str]) -> bool:
        def update(db: sqlite3.Connection, now: float) -> bool:
            return bool(
                db.execute(
                    "UPDATE conversations SET metadata = ?, expires_at = ? WHERE id = ? AND expires_at > ?",
                    (json.dumps(metadata), self._expiry(now), conversation_id, now),
                ).rowcount
            )

        return await self._call(self._write, update)

    async def delete_conversation(self, conversation_id: str) -> bool:
        def delete(db: sqlite3.Connection, now: float) -> bool:
            found = db.execute(
                "DELETE FROM conversations WHERE id = ? AND expires_at > ?", (conversation_id, now)
            ).rowcount
            db.execute(
                "DELETE FROM item_refs WHERE item_id IN "
                "(SELECT item_id FROM items WHERE conversation_id = ?)",
                (conversation_id,),
            )
            db.execute("DELETE FROM items WHERE conversation_id = ?", (conversation_id,))
            db.execute("DELETE FROM states WHERE id = ?", (conversation_id,))
            return bool(found)

        return await self._call(self._write, delete)

    def _live_items(self, db: sqlite3.Connection, conversation_id: str, now: float) -> int | None:
        row = db.execute(
            "SELECT items FROM conversations WHERE id = ? AND expires_at > ?", (conversation_id, now)
        ).fetchone()
        return None if row is None else int(row[0])

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]]) -> bool:
        def append(db: sqlite3.Connection, now: float) -> bool:
            count = self._live_items(db, conversation_id, now)
            if count is None:
                return False
            self._append(db, conversation_id, count, items)
            self._renew(db, conversation_id, now)
            owner = db.execute("SELECT owner FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            self._index(db, str(owner[0]), items, self._expiry(now))
            return True

        return await self._call(self._write, append)

    def _renew(self, db: sqlite3.Connection, conversation_id: str, now: float) -> None:
        expiry = self._expiry(now)
        db.execute("UPDATE conversations SET expires_at = ? WHERE id = ?", (expiry, conversation_id))
        db.execute("UPDATE states SET expires_at = ? WHERE id = ?", (expiry, conversation_id))

    async def list_items(
        self, conversation_id: str, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[dict[str, Any]], bool] | None:
        def read() -> tuple[list[dict[str, Any]], bool] | None:
            db = self.db
            bound: int | None = None
            if after is not None:
                row = db.execute(
                    "SELECT position FROM items WHERE conversation_id = ? AND item_id = ?",
                    (conversation_id, after),
                ).fetchone()
                if row is None:
                    return None
                bound = int(row[0])
            if order == "asc":
                rows = db.execute(
                    "SELECT data FROM items WHERE conversation_id = ? AND position > ? "
                    "ORDER BY position ASC LIMIT ?",
                    (conversation_id, -1 if bound is None else bound, limit + 1),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT data FROM items WHERE conversation_id = ? AND position < ? "
                    "ORDER BY position DESC LIMIT ?",
                    (conversation_id, 2**62 if bound is None else bound, limit + 1),
                ).fetchall()
            page = [json.loads(row[0]) for row in rows[:limit]]
            return page, len(rows) > limit

        return await self._call(read)

    async def items_since(self, conversation_id: str, start: int, limit: int) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            rows = self.db.execute(
                "SELECT data FROM items WHERE conversation_id = ? AND position >= ? "
                "ORDER BY position ASC LIMIT ?",
                (conversation_id, start, limit),
            ).fetchall()
            return [json.loads(row[0]) for row in rows]

        return await self._call(read)

    async def get_item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        def read() -> str | None:
            row = self.db.execute(
                "SELECT data FROM items WHERE conversation_id = ? AND item_id = ?", (conversation_id, item_id)
            ).fetchone()
            return None if row is None else str(row[0])

        text = await self._call(read)
        return None if text is None else dict(json.loads(text))

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        def read() -> list[tuple[str, str, str]]:
            wanted = list(dict.fromkeys(item_ids))
            marks = ", ".join("?" * len(wanted))
            rows: list[tuple[str, str, str]] = self.db.execute(
                f"SELECT item_id, owner, data FROM item_refs WHERE item_id IN ({marks}) "  # noqa: S608
                "AND expires_at > ?",
                (*wanted, time.time()),
            ).fetchall()
            return rows

        if not item_ids:
            return {}
        rows = await self._call(read)
        return {item_id: (owner, dict(json.loads(data))) for item_id, owner, data in rows}

    # --- turns and locks ----------------------------------------------------------------------
    async def save_turn(self, turn: Turn) -> bool:
        def save(db: sqlite3.Connection, now: float) -> bool:
            expiry = self._expiry(now)
            conversation = turn.conversation
            if conversation is not None:
                count = self._live_items(db, conversation.id, now)
                if count is None:
                    return False
                self._append(db, conversation.id, count, conversation.items)
                db.execute(
                    "UPDATE conversations SET run = ?, expires_at = ? WHERE id = ?",
                    (conversation.run.to_json(), expiry, conversation.id),
                )
                db.execute(
                    "INSERT OR REPLACE INTO states (id, data, expires_at) VALUES (?, ?, ?)",
                    (conversation.id, turn.state, expiry),
                )
            response = turn.response
            if response is not None:
                db.execute(
                    "INSERT INTO responses (id, record, expires_at) VALUES (?, ?, ?)",
                    (response.id, response.to_json(), expiry),
                )
                self._index(db, response.owner, items_of(response), expiry)
                if conversation is None:
                    db.execute(
                        "INSERT INTO states (id, data, expires_at) VALUES (?, ?, ?)",
                        (response.id, turn.state, expiry),
                    )
            return True

        return await self._call(self._write, save)

    async def try_lock(self, key: str, token: str, ttl_s: float) -> bool:
        def lock() -> bool:
            now = time.time()
            cursor = self.db.execute(
                "INSERT INTO locks (key, token, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at "
                "WHERE locks.expires_at <= ?",
                (key, token, now + ttl_s, now),
            )
            return cursor.rowcount == 1

        return await self._call(lock)

    async def renew_lock(self, key: str, token: str, ttl_s: float) -> bool:
        def renew() -> bool:
            now = time.time()
            cursor = self.db.execute(
                "UPDATE locks SET expires_at = ? WHERE key = ? AND token = ? AND expires_at > ?",
                (now + ttl_s, key, token, now),
            )
            return cursor.rowcount == 1

        return await self._call(renew)

    async def renew_conversation(self, conversation_id: str) -> bool:
        def renew(db: sqlite3.Connection, now: float) -> bool:
            if self._live_items(db, conversation_id, now) is None:
                return False
            self._renew(db, conversation_id, now)
            return True

        return await self._call(self._write, renew)

    async def unlock(self, key: str, token: str) -> None:
        def unlock() -> None:
            self.db.execute("DELETE FROM locks WHERE key = ? AND token = ?", (key, token))

        await self._call(unlock)

    async def close(self) -> None:
        await self.stop_tasks()

        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=False)
