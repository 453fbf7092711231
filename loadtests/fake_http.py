"""What the two fake OpenAI-compatible servers share: HTTP/1.1 on a raw ``asyncio.Protocol``, the
chat-completion wire format (chunks, usage, error bodies), request accounting, and the handles that run a
server in a thread or a subprocess.

- ``fake_llm.py``: the load-test fake (timing, reply length, error rate), cheap per chunk;
- ``scripted_llm.py``: the conformance-test fake (each reply scripted, every request recorded).

Why not uvicorn: a load fake must cost far less CPU per chunk than the service it feeds, and both fakes need
to see a client disconnect the moment it happens (``connection_lost`` cancels the handler task), which is
what the "cancelled" and "open streams" counters report.

A server subclasses ``FakeServer``, implements ``chat()`` (and may add routes in ``route()``); the base
answers ``GET /stats``, ``POST /stats/reset``, ``GET /v1/models``, ``GET /healthz`` and counts every
chat request: received, in flight, open streams, completed, cancelled by the client, faults injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.stopping import StopOnExit, terminate

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024  # a long team conversation sent back whole on every call

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")


# ---------------------------------------------------------------------------------------------------------
# Wire format
# ---------------------------------------------------------------------------------------------------------
def response(
    status: int,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A whole HTTP/1.1 response with a ``content-length``."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
        f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    """OpenAI's error object."""
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def json_response(data: Any, status: int = 200) -> bytes:
    return response(status, json.dumps(data).encode())


def bad_request(message: str) -> bytes:
    return response(400, error_body(message, "invalid_request_error"))


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def event(data: str) -> bytes:
    """One HTTP/1.1 chunk holding one SSE ``data:`` event."""
    return chunk(b"data: " + data.encode() + b"\n\n")


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n"
)
END_OF_BODY = b"0\r\n\r\n"  # the last chunk of a chunked body
DONE = chunk(b"data: [DONE]\n\n") + END_OF_BODY


class ChunkFormat:
    """The ``chat.completion.chunk`` events of one streamed completion: same ``id``, ``created`` and ``model``
    in every chunk, ``usage: null`` on each when usage was asked for, the usage chunk (``choices: []``) last.

    Built from preformatted strings: the load fake writes one event per token and must stay cheap.
    """

    __slots__ = ("_head", "_prefix", "_suffix", "_usage_field", "include_usage")

    def __init__(self, cid: str, created: int, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        self._head = (
            f'{{"id":"{cid}","object":"chat.completion.chunk","created":{created},"model":{json.dumps(model)},'
            '"system_fingerprint":null,'
        )
        self._prefix = self._head + '"choices":[{"index":0,"delta":'
        self._usage_field = ',"usage":null' if include_usage else ""
        self._suffix = ',"logprobs":null,"finish_reason":null}]' + self._usage_field + "}"

    def delta(self, delta_json: str) -> bytes:
        """An event with ``delta`` = ``delta_json`` (a JSON object, already encoded)."""
        return event(self._prefix + delta_json + self._suffix)

    def content(self, text: str) -> bytes:
        return self.delta('{"content":' + json.dumps(text) + "}")

    def end(self, finish_reason: str, usage: dict[str, int]) -> bytes:
        """The finishing chunk (empty delta), the usage chunk when asked for, ``[DONE]``, the body's end."""
        last = self._prefix + '{},"logprobs":null,"finish_reason":' + json.dumps(finish_reason) + "}]"
        out = [event(last + self._usage_field + "}")]
        if self.include_usage:
            out.append(event(self._head + '"choices":[],"usage":' + json.dumps(usage) + "}"))
        out.append(DONE)
        return b"".join(out)


def stream_error(message: str, kind: str = "server_error", code: str | None = None) -> bytes:
    """An error event after the stream started (the ``openai`` SDK raises ``APIError``), the body's end."""
    return chunk(b"data: " + error_body(message, kind, code) + b"\n\n") + END_OF_BODY


def completion_body(
    cid: str, created: int, model: str, message: dict[str, Any], finish_reason: str, usage: dict[str, int]
) -> bytes:
    """A non-streamed ``chat.completion``."""
    body = {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }
    return json.dumps(body).encode()


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def message_text(message: Any) -> str:
    """The text of one chat message: its string content or its text parts joined."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_prompt_tokens(messages: Any) -> int:
    """A deterministic stand-in for a tokenizer: a token per 4 characters of message text."""
    chars = sum(len(message_text(m)) for m in messages) if isinstance(messages, list) else 0
    return max(1, chars // 4)


def include_usage(payload: dict[str, Any]) -> bool:
    opts = payload.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def max_tokens_of(payload: dict[str, Any]) -> int | None:
    """``max_completion_tokens`` (the current name) or ``max_tokens``; None when absent or not positive."""
    value = payload.get("max_completion_tokens") or payload.get("max_tokens")
    return value if isinstance(value, int) and value > 0 else None


# ---------------------------------------------------------------------------------------------------------
# HTTP/1.1 connection
# ---------------------------------------------------------------------------------------------------------
class Request:
    __slots__ = ("body", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


class Connection(asyncio.Protocol):
    """One client connection: parses requests one at a time and runs a handler task per request.

    The peer closing the connection cancels the running handler at once (``connection_lost``).
    """

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.task: asyncio.Task[bool] | None = None
        self.closed = False
        self._can_write = asyncio.Event()
        self._can_write.set()

    # -- asyncio.Protocol -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._can_write.set()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- helpers ----------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the kernel's send buffer is full (a slow reader)."""
        if not self._can_write.is_set():
            await self._can_write.wait()

    def close(self) -> None:
        """Close after what was written is sent (a peer mid-body sees the body cut short)."""
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                self._reply_and_close(431)
            return
        head = bytes(self.buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        try:
            method, path, version = lines[0].split(" ", 2)
        except ValueError:
            self._reply_and_close(400)
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._reply_and_close(501)
            return
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._reply_and_close(400)
            return
        if length > MAX_BODY_BYTES:
            self._reply_and_close(413)
            return
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        keep_alive = version.upper() == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        request = Request(method.upper(), path.split("?", 1)[0], headers, body)
        self.task = asyncio.get_running_loop().create_task(self.server.handle(self, request))
        self.task.add_done_callback(lambda t: self._request_done(t, keep_alive))

    def _request_done(self, task: asyncio.Task[bool], keep_alive: bool) -> None:
        self.task = None
        ok = not task.cancelled() and task.exception() is None and task.result()
        if not task.cancelled() and task.exception() is not None:
            print(f"fake LLM handler error: {task.exception()!r}", file=sys.stderr, flush=True)
        if self.closed:
            return
        if not (ok and keep_alive):
            self.close()
            return
        if self.buffer:
            self._next_request()

    def _reply_and_close(self, status: int) -> None:
        self.write(response(status, error_body(REASONS.get(status, "error"), "invalid_request_error")))
        self.close()


# ---------------------------------------------------------------------------------------------------------
# Server base: routing, accounting
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ServerStats:
    """Counters of chat requests. ``in_flight``, ``open_streams`` and ``open_connections`` are gauges."""

    started_at: float = field(default_factory=time.time)
    requests: int = 0  # chat requests received (a malformed one too)
    streaming_requests: int = 0
    completed: int = 0  # answered to the end
    cancelled: int = 0  # the client went away before the end
    errors: int = 0  # faults injected
    in_flight: int = 0  # chat requests being handled
    open_streams: int = 0  # streaming chat requests being handled (received, not yet ended or abandoned)
    open_connections: int = 0  # TCP connections, idle keep-alive ones included
    last_request_at: float | None = None
    last_completed_at: float | None = None
    last_cancelled_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reset(self) -> None:
        """Zero the counters in place; the gauges stay."""
        gauges = {"in_flight": self.in_flight, "open_streams": self.open_streams}
        for name, value in asdict(type(self)()).items():
            setattr(self, name, value)
        for name, value in gauges.items():
            setattr(self, name, value)


class Outcome:
    """How one chat request ended: ``completed`` (the default), ``fault`` (an injected error),
    ``cancelled`` (the client left), or whatever else a server sets (``rejected``, ``unmatched``)."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = "completed"


class FakeServer:
    """A fake server; ``await start()`` binds, ``await stop()`` closes all. Subclasses implement ``chat``."""

    stats: ServerStats

    def __init__(self) -> None:
        self.stats = ServerStats()
        self.connections: set[Connection] = set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._ids = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host, port, backlog=4096)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def completion_id(self) -> str:
        self._ids += 1
        return f"chatcmpl-fake{os.getpid():x}{self._ids:08x}"

    def stats_snapshot(self) -> dict[str, Any]:
        self.stats.open_connections = len(self.connections)
        return self.stats.as_dict()

    # -- to implement -----------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return "fake-llm"

    async def chat(self, conn: Connection, req: Request, payload: dict[str, Any], outcome: Outcome) -> bool:
        """Answer one chat completion; return False to close the connection afterwards."""
        raise NotImplementedError

    async def route(self, conn: Connection, req: Request, path: str) -> bool | None:
        """Routes of a subclass; None: not one of them."""
        return None

    # -- routing ----------------------------------------------------------------------------------------
    async def handle(self, conn: Connection, req: Request) -> bool:
        path = req.path.rstrip("/") or "/"
        if path in CHAT_PATHS:
            if req.method != "POST":
                conn.write(response(405, error_body("use POST", "invalid_request_error")))
                return True
            return await self._chat(conn, req)
        own = await self.route(conn, req, path)
        if own is not None:
            return own
        if path in ("/stats", "/v1/stats"):
            conn.write(json_response(self.stats_snapshot()))
        elif path == "/stats/reset":
            self.stats.reset()
            conn.write(json_response(self.stats_snapshot()))
        elif path in ("/v1/models", "/models"):
            model = {"id": self.model_id, "object": "model", "created": 0, "owned_by": "fake-llm"}
            conn.write(json_response({"object": "list", "data": [model]}))
        elif path in ("/healthz", "/readyz", "/health"):
            conn.write(response(200, b'{"status":"ok"}'))
        else:
            conn.write(response(404, error_body(f"no route {req.path}", "invalid_request_error")))
        return True

    async def _chat(self, conn: Connection, req: Request) -> bool:
        stats = self.stats
        stats.requests += 1
        stats.last_request_at = time.time()
        try:
            payload = req.json()
            if not isinstance(payload, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            conn.write(bad_request(f"invalid JSON body: {exc}"))
            return True
        stream = bool(payload.get("stream"))
        outcome = Outcome()
        stats.in_flight += 1
        if stream:
            stats.streaming_requests += 1
            stats.open_streams += 1
        try:
            keep = await self.chat(conn, req, payload, outcome)
        except asyncio.CancelledError:
            outcome.status = "cancelled"
            stats.cancelled += 1
            stats.last_cancelled_at = time.time()
            raise
        finally:
            stats.in_flight -= 1
            if stream:
                stats.open_streams -= 1
        if outcome.status == "completed":
            stats.completed += 1
            stats.last_completed_at = time.time()
        elif outcome.status == "fault":
            stats.errors += 1
        return keep


# ---------------------------------------------------------------------------------------------------------
# Running a server: CLI, subprocess handle, thread handle
# ---------------------------------------------------------------------------------------------------------
def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 30.0) -> Any:
    """A JSON request to a control endpoint; an HTTP error raises ``RuntimeError`` with the server's text.

    The timeout is generous: a fake busy writing many streams on a loaded machine answers its
    control endpoints late, and a test should then wait rather than fail."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise RuntimeError(f"{method} {url}: HTTP {exc.code}: {detail}") from None


class ServerHandle(StopOnExit):
    """A running fake: its addresses and the control endpoints every fake has."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client (or ``LLM_BASE_URL``) needs: ``http://host:port/v1``."""
        return f"{self.url}/v1"

    def get(self, path: str) -> Any:
        return http_json(f"{self.url}{path}")

    def post(self, path: str, body: Any = None) -> Any:
        return http_json(f"{self.url}{path}", method="POST", body=body)

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get("/stats")
        return data

    def reset_stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.post("/stats/reset")
        return data


class SubprocessHandle(ServerHandle):
    """A fake running in its own process."""

    def __init__(self, proc: subprocess.Popen[bytes], host: str, port: int) -> None:
        self.proc = proc
        self.host = host
        self.port = port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 5.0) -> None:
        terminate(self.proc, timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def spawn(
    module: str,
    args: list[str],
    port_line: str,
    *,
    log_path: str | os.PathLike[str] | None = None,
    startup_timeout: float = 20.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m module args``; waits for the ``<port_line>=<port>`` line the server prints once bound."""
    repo_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = repo_root + os.pathsep + env.get("PYTHONPATH", "")
    stderr: Any = subprocess.DEVNULL
    log_file = None
    if log_path is not None:
        log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        stderr = log_file
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=repo_root)
    if log_file is not None:
        log_file.close()
    stdout = proc.stdout
    assert stdout is not None
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(startup_timeout)
    line = result[0].decode().strip() if result else ""
    if not line.startswith(port_line + "="):
        proc.kill()
        proc.wait()
        stdout.close()
        raise RuntimeError(f"{module} did not start (got {line!r}, exit code {proc.poll()})")
    return proc, int(line.split("=", 1)[1])


class ThreadHandle(ServerHandle):
    """A fake served by an event loop of its own in a background thread of this process (so a test's own
    event loop, an in-process ASGI app's for instance, never has to serve it)."""

    def __init__(self, server: FakeServer, host: str, port: int) -> None:
        self.host = host
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, args=(host, port), daemon=True, name="fake-llm")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake LLM thread did not start")
        if self._error is not None:
            raise RuntimeError("fake LLM thread failed") from self._error
        self.port = self.server.port

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                await self.server.start(host, port)
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            await self._stop.wait()
            await self.server.stop()

        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


async def serve_until_signalled(
    server: FakeServer, host: str, port: int, port_line: str, banner: str
) -> None:
    """The CLI: bind, print ``<port_line>=<port>`` (``spawn`` reads it), serve until SIGTERM or SIGINT."""
    bound = await server.start(host, port)
    print(f"{port_line}={bound}", flush=True)
    print(f"{banner} on http://{host}:{bound}/v1", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
