"""A logging reverse proxy between Open WebUI and the service.

Open WebUI is configured with this proxy as its OpenAI base URL. Every request is forwarded unchanged and
its response (streams included) is relayed chunk by chunk as it arrives, so the UI behaves exactly as it
would against the service directly; on the side, each exchange is recorded: the request body (which model,
streaming or not, the messages and tools Open WebUI sent) and the response bytes of chat completions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

# Headers that describe one hop, not the message (RFC 9110 section 7.6.1); aiohttp sets its own.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# A chat completion body is kept for the checks up to this size; larger ones are cut (and marked so).
_MAX_KEPT_RESPONSE = 4 * 1024 * 1024


@dataclass
class Exchange:
    """One request that went through the proxy, and what came back."""

    seq: int
    method: str
    path: str
    started: float
    request_body: Any = None
    status: int | None = None
    finished: float | None = None
    response_bytes: int = 0
    response_text: str = ""
    response_truncated: bool = False
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and self.path.endswith("/chat/completions")

    @property
    def model(self) -> str | None:
        body = self.request_body
        return body.get("model") if isinstance(body, dict) else None

    @property
    def stream(self) -> bool:
        body = self.request_body
        return bool(body.get("stream")) if isinstance(body, dict) else False

    @property
    def messages(self) -> list[dict[str, Any]]:
        body = self.request_body
        msgs = body.get("messages") if isinstance(body, dict) else None
        return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []

    @property
    def tool_count(self) -> int:
        body = self.request_body
        tools = body.get("tools") if isinstance(body, dict) else None
        return len(tools) if isinstance(tools, list) else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "stream": self.stream,
            "tools": self.tool_count,
            "status": self.status,
            "seconds": None if self.finished is None else round(self.finished - self.started, 3),
            "response_bytes": self.response_bytes,
            "error": self.error,
            "request": self.request_body,
            "response": self.response_text if self.is_chat else None,
            "response_truncated": self.response_truncated,
        }


class LoggingProxy:
    """``async with LoggingProxy(upstream) as proxy:`` listens on 127.0.0.1 at ``proxy.url``."""

    def __init__(self, upstream: str, log_path: Path | None = None, read_timeout_s: float = 600.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.log_path = log_path
        self.exchanges: list[Exchange] = []
        self._read_timeout_s = read_timeout_s
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._changed = asyncio.Condition()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> LoggingProxy:
        # No total timeout (a team run streams for as long as it runs); a stalled read still ends.
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=self._read_timeout_s)
        # auto_decompress=False: bytes are relayed exactly as the service sent them.
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # On the way out, a stream still open (an interrupted run) is cut after 5 s rather than 60.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        # Bind first so the port is known without reaching into aiohttp's site internals.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def chat_exchanges(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.is_chat]

    async def wait_idle(self, quiet_s: float, timeout_s: float) -> None:
        """Return once no exchange is open and none started for ``quiet_s`` (bounded by ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"the UI kept talking to the service for more than {timeout_s:.0f} s")
            open_ = [e for e in self.exchanges if not e.done.is_set()]
            last_start = max((e.started for e in self.exchanges), default=0.0)
            if not open_ and now - last_start >= quiet_s:
                return
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(quiet_s, deadline - now))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        raw = await request.read()
        exchange = Exchange(len(self.exchanges) + 1, request.method, request.path, time.monotonic())
        if raw:
            try:
                exchange.request_body = json.loads(raw)
            except ValueError:
                exchange.request_body = {"_raw": raw[:2000].decode(errors="replace")}
        self.exchanges.append(exchange)
        await self._notify()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        kept = bytearray()
        response: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=raw if raw else None,
                allow_redirects=False,
            ) as upstream:
                exchange.status = upstream.status
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        response.headers.add(key, value)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    exchange.response_bytes += len(chunk)
                    if exchange.is_chat:
                        room = _MAX_KEPT_RESPONSE - len(kept)
                        if room > 0:
                            kept += chunk[:room]
                        if len(chunk) > room:
                            exchange.response_truncated = True
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError, ConnectionResetError) as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
            if response is None:
                exchange.status = 502
                return web.json_response(
                    {"error": {"message": f"proxy: upstream failed: {exc}", "type": "proxy_error"}},
                    status=502,
                )
            raise
        finally:
            exchange.response_text = kept.decode(errors="replace")
            exchange.finished = time.monotonic()
            exchange.done.set()
            self._write_log(exchange)
            await self._notify()

    def _write_log(self, exchange: Exchange) -> None:
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(exchange.as_dict(), ensure_ascii=False) + "\n")


class EgressTrap:
    """An HTTP(S) proxy that refuses everything and records what was asked for.

    Set as ``HTTP(S)_PROXY`` for Open WebUI (with ``NO_PROXY`` for loopback), it shows any attempt of the
    UI's libraries to reach the internet (a model download, a version check) instead of letting it hang
    on this machine's closed network.
    """

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> EgressTrap:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            self.attempts.append(line.decode(errors="replace").strip()[:300])
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await asyncio.wait_for(writer.drain(), timeout=10)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
