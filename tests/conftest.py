"""Shared fixtures: the real app over httpx's ASGI transport, and the official `openai` SDK client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.config import Settings


def make_settings(**overrides: Any) -> Settings:
    """Settings for in-process tests: defaults, never the developer's `.env`.

    The garbage collector is not frozen here: it would freeze the test process's objects at every
    app start-up (the worker's tuning is checked on a real server).
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


AppFactory = Callable[..., Any]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(make_settings())) as http:
        yield http


@pytest.fixture
async def sdk(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
