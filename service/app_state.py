"""What a worker keeps on its app, reached through one typed accessor.

Each part of the service that keeps something on the app declares a `StateKey` beside the type it
keeps (the settings, the lifecycle, the metrics, the serving context, the protections, the state
store). `put(app, key, value)` keeps it; `get(app, key)` returns it with its type, or raises;
`find(app, key)` returns None while it is not there (the metrics before the lifespan started). No
other code reads `app.state` by attribute name. Per-request values (what a guard learned about the
request: the API key's id, the rate-limit headers) go the same way: `put(request, key, value)` and
`find(request, key)` with a `StateKey` (a Starlette request has a `state` like the app's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class StateKey(Generic[T]):
    name: str
    kind: type[T]


def put(app: Any, key: StateKey[T], value: T) -> None:
    """Keep `value` on `app` (a Starlette/FastAPI app, or a request) under `key`."""
    setattr(app.state, key.name, value)


def find(app: Any, key: StateKey[T]) -> T | None:
    """The value `app` keeps under `key`, or None when it keeps none (or `app` has no state)."""
    value = getattr(getattr(app, "state", None), key.name, None)
    return value if isinstance(value, key.kind) else None


def get(app: Any, key: StateKey[T]) -> T:
    """The value `app` keeps under `key`.

    Raises:
        LookupError: the app keeps none (a bug: the app factory puts every key the routes use).
    """
    value = find(app, key)
    if value is None:
        raise LookupError(f"the app keeps no {key.name}")
    return value
