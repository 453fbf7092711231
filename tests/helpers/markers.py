"""Markers given to tests automatically, from what their code starts (tests/conftest.py applies them).

A test is marked by what its own code, its fixtures' code, and the project functions and classes
they call (in tests/, loadtests/, uicheck/, followed by name) refer to:

| marker | given when the code refers to |
| --- | --- |
| `gunicorn` | `start_service`, `ServiceProcess` (the real service: gunicorn + uvicorn workers) |
| `redis` | `RedisServer`, `requires_redis`, `REDIS_SERVER` (a throwaway redis-server) |
| `browser` | `chromium`, `sync_playwright`, `async_playwright` (Debian's chromium) |
| `image` | `podman` (the built container image) |
| `process` | any of the above, or `subprocess`, `Popen`, `os.fork`, `start_scripted_llm_process` |

A test that carries `requires_redis` (tests/helpers/redis_server.py), directly or through a
parameter, gets `redis` and `process` too. `slow` is written on the test itself
(`@pytest.mark.slow`): it cannot be read from the code. The markers are registered in
pyproject.toml (`pytest --markers` lists them).

So a new test that starts the service or a subprocess through the usual helpers gets its markers
without naming them, and `make test-fast` (`-m "not process and not slow"`) skips it. The scan reads
names, not data flow: a name that is only mentioned (never called) still marks the test, which errs
on the side of leaving a test out of the fast set.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Packages whose functions are followed when a test calls them (never the service or libraries).
FOLLOWED_PACKAGES = ("tests", "loadtests", "uicheck")

KINDS: dict[str, frozenset[str]] = {
    "gunicorn": frozenset({"start_service", "ServiceProcess"}),
    "redis": frozenset({"RedisServer", "requires_redis", "REDIS_SERVER"}),
    "browser": frozenset({"chromium", "sync_playwright", "async_playwright"}),
    "image": frozenset({"podman"}),
}
PROCESS_ONLY = frozenset({"subprocess", "Popen", "fork", "start_scripted_llm_process", "ScriptedLLMProcess"})


def followed(obj: object) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in FOLLOWED_PACKAGES


def _codes(code: CodeType) -> Iterator[CodeType]:
    """A code object and those nested in it (inner functions, lambdas, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _codes(const)


class Scanner:
    """Names referred to by functions, followed through the project's own functions; memoised."""

    def __init__(self) -> None:
        self._seen: dict[int, frozenset[str]] = {}

    def names(self, obj: Any) -> frozenset[str]:
        key = id(obj)
        if key in self._seen:
            return self._seen[key]
        self._seen[key] = frozenset()  # a cycle contributes nothing new
        found: set[str] = set()
        for function in self._functions(obj):
            module = sys.modules.get(function.__module__)
            scope = vars(module) if module else {}
            for code in _codes(function.__code__):
                names = set(code.co_names) | set(code.co_freevars)
                found |= names
                for name in names:
                    target = scope.get(name)
                    if target is None:
                        continue
                    if isinstance(target, ModuleType):
                        # `helpers.start_x(...)`: follow the attributes named in the same code.
                        for attribute in names:
                            member = getattr(target, attribute, None)
                            if member is not None and followed(member) and callable(member):
                                found |= self.names(member)
                    elif followed(target) and callable(target):
                        found |= self.names(target)
        result = frozenset(found)
        self._seen[key] = result
        return result

    @staticmethod
    def _functions(obj: Any) -> Iterable[FunctionType]:
        obj = inspect.unwrap(obj) if callable(obj) else obj
        if isinstance(obj, FunctionType):
            return [obj]
        if inspect.isclass(obj):
            return [
                inspect.unwrap(member)
                for member in vars(obj).values()
                if isinstance(inspect.unwrap(member), FunctionType)
            ]
        function = getattr(obj, "__func__", None)  # a bound method
        return [function] if isinstance(function, FunctionType) else []


def markers_for(names: frozenset[str]) -> set[str]:
    marks = {kind for kind, triggers in KINDS.items() if names & triggers}
    if marks or names & PROCESS_ONLY:
        marks.add("process")
    return marks
