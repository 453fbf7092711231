"""What the Responses API keeps between requests, and the interface of the stores that keep it.

Kept, each with a time to live (`STATE_TTL_S`):
- a stored response (`ResponseRecord`): the response object as returned, its input items, and what
  a continuation needs (the workflow, the instructions in force, the pending input request);
- a team's saved state (`save_state()` of the AgentChat team after the turn), keyed by the response
  id, or by the conversation id for a conversation (one state per conversation, replaced each turn);
- a conversation (`ConversationRecord`) and its items (inputs and outputs, in order); its TTL is
  renewed by every turn and every change;
- per-conversation (or per-response) run locks: leases renewed while their turn runs, whose expiry
  frees within seconds a lock that a dead worker held;
- every stored item (a response's input and output items, a conversation's items) once more by its
  own id, with its owner (`get_items`): what a Responses `item_reference` input item points at. It
  is kept for the TTL from when it was written (a conversation's renewals do not extend it).

A turn is saved in one transaction (`save_turn`): the response, its state, the conversation's items
and head move together or not at all. Nothing is saved for a failed or cancelled run, or with
`store: false`.

Ownership is a field of the records (the API key's fingerprint); the serving layer compares it, so
another key's object is answered exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Order = Literal["asc", "desc"]
# The owner when authentication is off: every caller shares one owner.
ANONYMOUS_OWNER = "anonymous"
_STATE_FORMAT = b"z1"  # zlib-compressed JSON, format 1


class StateStoreUnavailable(RuntimeError):
    """The store could not be reached or failed (a 503 for the caller; details in the log)."""


class StateCorrupt(ValueError):
    """Stored state that cannot be read back: garbage, bad zlib, not a JSON object, nested too deep,
    or inflating past `STATE_MAX_BYTES` (a 409 `state_incompatible` for the caller, never a 500)."""


class StateTooLarge(ValueError):
    """A team's state is larger than `STATE_MAX_BYTES`."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes > {limit}")
        self.size = size
        self.limit = limit


def encode_state(state: Mapping[str, Any], max_bytes: int) -> tuple[bytes, int]:
    """A team's saved state as stored bytes (compressed JSON), and its JSON size.

    Raises:
        StateTooLarge: the JSON is above `max_bytes` (the bound is on the JSON: it is what a load
            costs in memory).
    """
    text = json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > max_bytes:
        raise StateTooLarge(len(text), max_bytes)
    return _STATE_FORMAT + zlib.compress(text, 1), len(text)


def decode_state(data: bytes, max_bytes: int) -> dict[str, Any]:
    """A stored state back as the team's `save_state()` dict.

    Decompression stops at `max_bytes` (the bound `encode_state` checked on save), so a stored
    zlib bomb costs at most that much memory.

    Raises:
        StateCorrupt: anything but a stored state of this format within the bound.
    """
    if not data.startswith(_STATE_FORMAT):
        raise StateCorrupt("unknown state format")
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data[len(_STATE_FORMAT) :], max_bytes + 1)
    except zlib.error as exc:
        raise StateCorrupt(f"not zlib data: {exc}") from None
    if len(text) > max_bytes or inflater.unconsumed_tail:
        raise StateCorrupt(f"inflates past {max_bytes} bytes")
    if not inflater.eof:
        raise StateCorrupt("truncated")
    try:
        state = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StateCorrupt(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(state, dict):
        raise StateCorrupt("a saved state is a JSON object")
    return state


@dataclass
class PendingInput:
    """The team stopped for a person's answer: who asked, the question, and how the answer goes
    back (`user_proxy`: as the UserProxyAgent's message; `handoff`: handed back to the agent)."""

    agent: str
    prompt: str
    kind: str

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> PendingInput | None:
        if not data:
            return None
        return cls(agent=str(data["agent"]), prompt=str(data["prompt"]), kind=str(data["kind"]))


@dataclass
class ResponseRecord:
    id: str
    owner: str
    model: str
    created_at: int
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    instructions: str | None = None
    pending_input: PendingInput | None = None
    conversation_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ResponseRecord:
        data = json.loads(text)
        data["pending_input"] = PendingInput.of(data.get("pending_input"))
        return cls(**data)


@dataclass
class ConversationRun:
    """What a conversation's next turn needs (replaced by every turn)."""

    model: str | None = None  # the workflow whose team state the conversation holds
    seen: int = 0  # how many of the conversation's items the team's state already includes
    turns: int = 0
    instructions: str | None = None
    pending_input: PendingInput | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> ConversationRun:
        if not text:
            return cls()
        data = json.loads(text)
        data["pending_input"] = PendingInput.of(data.get("pending_input"))
        return cls(**data)


@dataclass
class ConversationRecord:
    id: str
    owner: str
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)
    run: ConversationRun = field(default_factory=ConversationRun)
    items: int = 0  # how many items it holds


@dataclass
class ConversationTurn:
    """A turn's changes to its conversation: items appended, and the new `run`."""

    id: str
    items: list[dict[str, Any]]
    run: ConversationRun


def items_of(record: ResponseRecord) -> list[dict[str, Any]]:
    """A stored response's items, inputs then outputs (what `item_reference` can point at)."""
    output = record.response.get("output", [])
    return [*record.input_items, *(item for item in output if isinstance(item, dict))]


@dataclass
class Turn:
    """Everything one finished turn stores, in one transaction."""

    state: bytes
    response: ResponseRecord | None = None
    conversation: ConversationTurn | None = None


class StateStore(ABC):
    """Async access to the stored responses, conversations, team states and run locks.

    Backends: `SqliteStateStore` (one file, shared by the workers of one machine) and
    `RedisStateStore` (shared by every pod). Expired objects are never returned.

    Raises (every method):
        StateStoreUnavailable: the backend failed or could not be reached.
    """

    backend: str

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        # Called once per failed operation (the service counts them in a metric).
        self.on_error: Callable[[], None] | None = None
        # Tasks working on the store in the background (lease renewals, retried unlocks).
        self._tasks: set[asyncio.Task[None]] = set()

    def keep(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """Hold `task` until it ends (it is cancelled when the store closes)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def failed(self) -> None:
        if self.on_error is not None:
            self.on_error()

    # --- responses ----------------------------------------------------------------------------
    @abstractmethod
    async def get_response(self, response_id: str) -> ResponseRecord | None: ...

    @abstractmethod
    async def delete_response(self, response_id: str) -> bool:
        """Delete a response and its state; False when there was none."""

    # --- team states --------------------------------------------------------------------------
    @abstractmethod
    async def load_state(self, key: str) -> bytes | None:
        """The saved state of a response (its id) or a conversation (its id)."""

    # --- conversations ------------------------------------------------------------------------
    @abstractmethod
    async def create_conversation(self, record: ConversationRecord, items: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None: ...

    @abstractmethod
    async def update_metadata(self, conversation_id: str, metadata: dict[str, str]) -> bool: ...

    @abstractmethod
    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a conversation, its items and its state (its responses stay until they expire)."""

    @abstractmethod
    async def append_items(self, conversation_id: str, items: list[dict[str, Any]]) -> bool:
        """Append items (the team reads them on the next turn); False when the conversation is gone."""

    @abstractmethod
    async def list_items(
        self, conversation_id: str, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of items: (items, has_more); None when `after` is not an item of the conversation."""

    @abstractmethod
    async def items_since(self, conversation_id: str, start: int, limit: int) -> list[dict[str, Any]]:
        """The items from position `start` on (at most `limit`), oldest first."""

    @abstractmethod
    async def get_item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def get_items(self, item_ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """The stored items with these ids, whoever stored them: id -> (owner, item); unknown or
        expired ids are left out (the caller compares the owner)."""

    # --- turns and locks ----------------------------------------------------------------------
    @abstractmethod
    async def save_turn(self, turn: Turn) -> bool:
        """Store a finished turn atomically; False (nothing stored) when its conversation is gone.
        The response's input and output items are also kept by id (`get_items`).
        A save that a stalled store would apply after its caller gave up (and told its client the
        turn failed) is not applied.

        Raises:
            StateStoreUnavailable: the store failed, or could not apply the save in time."""

    @abstractmethod
    async def try_lock(self, key: str, token: str, ttl_s: float) -> bool:
        """Take the run lock `key` for `token` unless someone else holds it (expired locks are free)."""

    @abstractmethod
    async def renew_lock(self, key: str, token: str, ttl_s: float) -> bool:
        """Extend the lock to `ttl_s` from now if `token` still holds it (a lease renewed while its
        turn runs, so that a dead holder's lock is free within one `ttl_s`); False when it is lost."""

    @abstractmethod
    async def unlock(self, key: str, token: str) -> None:
        """Release the lock if `token` still holds it."""

    @abstractmethod
    async def renew_conversation(self, conversation_id: str) -> bool:
        """Renew a conversation's TTL (with its items and state); False when it is gone. A turn calls
        it when it starts, so a conversation never expires under a running turn."""

    @abstractmethod
    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Check that the store answers (start-up log, tests)."""
        await self.get_response("resp_ping")
