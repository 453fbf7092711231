"""Message-handler discovery done once per agent class instead of once per agent instance.

Every team run starts a fresh AgentChat runtime, and each of its agents (the group chat manager, one
container per participant) is an `autogen_core.RoutedAgent`, whose constructor finds its handlers by
scanning `dir(cls)` with a `getattr` for every attribute: about 0.6 ms of CPU per `demo-team` request
(a twentieth of the service's own work), repeated with the same result, since handlers are methods
declared on the class. The scan's result is kept per class (weakly, so a class built at run time can
still go away); a class that overrides `_discover_handlers` keeps its own.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from autogen_core import RoutedAgent

logger = logging.getLogger(__name__)

_MARKER = "_service_cached_discovery"


def cache_handler_discovery() -> None:
    """Make `RoutedAgent._discover_handlers` remember its answer per class (idempotent)."""
    current = RoutedAgent.__dict__.get("_discover_handlers")
    if not isinstance(current, classmethod):
        logger.warning("RoutedAgent._discover_handlers is not a classmethod: handler discovery not cached")
        return
    if getattr(current.__func__, _MARKER, False):
        return
    discover: Callable[[type[Any]], Sequence[Any]] = current.__func__
    found: weakref.WeakKeyDictionary[type[Any], tuple[Any, ...]] = weakref.WeakKeyDictionary()

    def discover_once(cls: type[Any]) -> Sequence[Any]:
        handlers = found.get(cls)
        if handlers is None:
            handlers = found[cls] = tuple(discover(cls))
        return handlers

    setattr(discover_once, _MARKER, True)
    discover_once.__wrapped__ = discover  # type: ignore[attr-defined]
    type.__setattr__(RoutedAgent, "_discover_handlers", classmethod(discover_once))
