"""MCP tools: one MCP server session per worker, shared by every request, restarted when it dies.

An `McpWorkbench` (stdio, SSE or streamable HTTP) starts its server session on first use. Built per
request, that is a new server process per request (1.7-2.6 s measured). The registry shares one
`SharedMcpWorkbench` per workflow node instead. Concurrent requests may use it at once: autogen-ext's
session actor hands each call back to its caller, and the MCP session multiplexes requests by id.

The session is started in a context of its own (not the first request's: its actor task would
otherwise keep that request's context variables, the run included, for the life of the worker).

When the server dies (its process exits, the connection drops), autogen-ext does not notice: its
actor task lives on and every call fails. The service notices: listing the tools (which an agent does
before each model call, and which has no side effects) that fails starts a new session and lists
again; a tool call that fails on the transport marks the session, so the next use starts a new one.
A tool call is never retried: the tool may have run.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Mapping
from typing import Any

from autogen_core import CancellationToken
from autogen_core.tools import ToolResult, ToolSchema, Workbench
from autogen_ext.tools.mcp import McpWorkbench

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
# What autogen-ext reports for a tool call whose session broke (a closed stream's message is empty).
_TRANSPORT_FAILURES = frozenset({"", "Connection closed"})


def _alive(workbench: McpWorkbench) -> bool:
    actor = workbench._actor  # autogen-ext's session actor (pinned version; tested)
    task = getattr(actor, "_actor_task", None)
    return (
        actor is not None and bool(getattr(actor, "_active", False)) and task is not None and not task.done()
    )


class SharedMcpWorkbench(Workbench):
    """A worker's MCP workbench: started once, restarted on the next use after it died."""

    def __init__(self, spec: Mapping[str, Any], label: str) -> None:
        super().__init__()
        self._spec = dict(spec)
        self._label = label
        self._inner: McpWorkbench | None = None
        self._lock: asyncio.Lock | None = None
        self._broken: McpWorkbench | None = None
        self.starts = 0

    async def _workbench(self) -> McpWorkbench:
        inner = self._inner
        if inner is not None and inner is not self._broken and _alive(inner):
            return inner
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            inner = self._inner
            if inner is not None and inner is not self._broken and _alive(inner):
                return inner
            if inner is not None:
                logger.warning("MCP server session ended; starting a new one", extra={"source": self._label})
                with contextlib.suppress(Exception):
                    await inner.stop()
            fresh = McpWorkbench.load_component(self._spec)
            # A fresh context: the session's actor task must not keep this request's context.
            start = asyncio.get_running_loop().create_task(fresh.start(), context=contextvars.Context())
            async with asyncio.timeout(START_TIMEOUT_S):
                await start
            self._inner = fresh
            self.starts += 1
            logger.info("MCP server session started", extra={"source": self._label})
            return fresh

    async def list_tools(self) -> list[ToolSchema]:
        workbench = await self._workbench()
        try:
            return await workbench.list_tools()
        except Exception as exc:
            logger.warning("MCP tools could not be listed", extra={"reason": f"{type(exc).__name__}: {exc}"})
            self._broken = workbench
            return await (await self._workbench()).list_tools()

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        workbench = await self._workbench()
        # autogen-ext links the call's *coroutine* to the token it is given, and a coroutine cannot
        # be cancelled: cancelling the run would raise inside `CancellationToken.cancel()` and skip
        # the run's other callbacks. The call runs as a task of its own, linked to the run instead.
        call = asyncio.ensure_future(workbench.call_tool(name, arguments, None, call_id))
        if cancellation_token is not None:
            cancellation_token.link_future(call)
        result = await call
        if result.is_error and result.to_text().strip() in _TRANSPORT_FAILURES:
            self._broken = workbench  # the next use starts a new session
        return result

    async def start(self) -> None:
        await self._workbench()

    async def stop(self) -> None:
        inner, self._inner = self._inner, None
        if inner is not None and _alive(inner):
            await inner.stop()

    async def reset(self) -> None:
        """Shared by every request: one request's reset must not disturb the others."""

    async def save_state(self) -> Mapping[str, Any]:
        return {}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        return None
