"""The real app in this process: settings for tests and the app served over httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from service.config import Settings


def make_settings(**overrides: Any) -> Settings:
    """Settings for in-process tests: defaults, never the developer's `.env`.

    The garbage collector is not frozen here: it would freeze the test process's objects at every
    app start-up (the worker's tuning is checked on a real server). `DATA_DIR` is the test
    worker's own (set by tests/conftest.py), so parallel workers never share a SQLite file.
    """
    overrides.setdefault("gc_freeze_after_startup", False)
    overrides.setdefault("metrics_cache_s", 0.0)  # tests read /metrics right after what they count
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
