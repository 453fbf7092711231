"""A small, cheap OpenAI-compatible fake LLM server for load tests and the lead's tests.

It speaks just enough HTTP/1.1 (raw ``asyncio.Protocol``, keep-alive, chunked streaming) to serve:

- ``POST /v1/chat/completions`` (also ``/chat/completions``): streaming and not, ``usage``,
  ``stream_options.include_usage``, ``max_tokens``/``max_completion_tokens`` (``finish_reason: length``);
- ``GET /v1/models``, ``GET /healthz``;
- ``GET /stats`` (``POST /stats/reset``): chat requests received, completed, cancelled by the client, errors
  injected, in flight, and the timestamps of the last ones;
- ``GET /config``, ``POST /config`` (JSON with ``FakeLLMConfig`` fields): read or change the defaults.

Timing: the first content token is sent ``ttft_ms`` after the request, then one token every ``token_ms``
(on absolute deadlines, so a busy event loop does not stretch a reply). Per request the defaults can be
overridden with headers ``x-fake-ttft-ms``, ``x-fake-token-ms``, ``x-fake-tokens`` and ``x-fake-error``
(``http`` or ``stream``).

Run it: ``python -m loadtests.fake_llm --port 9000 --ttft-ms 100 --token-ms 10 --tokens 32``.
From Python: ``start_fake_llm_process(port=0, ttft_ms=...)`` (a subprocess) or ``start_fake_llm_thread(...)``
(in-process, in a background thread); both return a handle with ``base_url``, ``stats()``, ``stop()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.stopping import StopOnExit, terminate

DEFAULT_REPLY = (
    "The quick brown fox jumps over the lazy dog while the agents discuss the plan and write a short "
    "answer for the user about load tests streaming tokens latency throughput and overhead"
)

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


@dataclass
class FakeLLMConfig:
    """Behaviour of the fake LLM (defaults of every request)."""

    ttft_ms: float = 50.0
    token_ms: float = 5.0
    tokens: int = 32
    error_rate: float = 0.0
    error_kind: str = "http"  # "http": 500 before any byte; "stream": error event after a few tokens
    reply: str = ""  # words cycled to ``tokens`` tokens; empty: a fixed sentence
    model: str = "fake-llm"
    seed: int | None = None
    # end the reply with ``terminate_word`` once the request holds ``terminate_turn`` non-system messages
    # (a round-robin team's k-th call sees k of them: 3 makes a three-agent team stop after one round)
    terminate_word: str = "TERMINATE"
    terminate_turn: int = 0


@dataclass
class FakeLLMStats:
    started_at: float = field(default_factory=time.time)
    requests: int = 0
    streaming_requests: int = 0
    completed: int = 0
    cancelled: int = 0
    errors: int = 0
    in_flight: int = 0
    last_request_at: float | None = None
    last_completed_at: float | None = None
    last_cancelled_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reset(self) -> None:
        """Zero the counters in place (requests in flight stay counted)."""
        in_flight = self.in_flight
        for name, value in asdict(FakeLLMStats()).items():
            setattr(self, name, value)
        self.in_flight = in_flight


class _Request:
    __slots__ = ("body", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One client connection: parses requests one at a time and runs a handler task per request."""

    def __init__(self, server: FakeLLMServer) -> None:
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
        if not self._can_write.is_set():
            await self._can_write.wait()

    def close(self) -> None:
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
        request = _Request(method.upper(), path.split("?", 1)[0], headers, body)
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
        self.write(_response(status, _error_body(_REASONS.get(status, "error"), "invalid_request_error")))
        self.close()


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _error_body(message: str, kind: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _event(data: str) -> bytes:
    """One HTTP/1.1 chunk holding one SSE ``data:`` event."""
    return _chunk(b"data: " + data.encode() + b"\n\n")


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _count_turns(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") != "system")


def _count_prompt_tokens(messages: Any) -> int:
    chars = 0
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                content = message.get("content")
                if isinstance(content, str):
                    chars += len(content)
                elif isinstance(content, list):
                    for part in content:
                        if isinstance(part, dict) and isinstance(part.get("text"), str):
                            chars += len(part["text"])
    return max(1, chars // 4)


class FakeLLMServer:
    """The server; ``await start()`` binds, ``await stop()`` closes everything."""

    def __init__(self, config: FakeLLMConfig | None = None) -> None:
        self.config = config or FakeLLMConfig()
        self.stats = FakeLLMStats()
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._rng = random.Random(self.config.seed)
        self._ids = 0
        words = (self.config.reply or DEFAULT_REPLY).split()
        self._words = [w if i == 0 else " " + w for i, w in enumerate(words)]
        self._words_cont = [" " + w for w in words]
        self.port = 0

    def configure(self, **changes: Any) -> None:
        """Change the defaults of the next requests (``FakeLLMConfig`` fields)."""
        config = FakeLLMConfig(**{**asdict(self.config), **changes})
        self.config = config
        words = (config.reply or DEFAULT_REPLY).split()
        self._words = [w if i == 0 else " " + w for i, w in enumerate(words)]
        self._words_cont = [" " + w for w in words]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=4096)
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

    # -- routing ----------------------------------------------------------------------------------------
    async def handle(self, conn: _Connection, req: _Request) -> bool:
        path = req.path.rstrip("/") or "/"
        if path in ("/v1/chat/completions", "/chat/completions"):
            if req.method != "POST":
                conn.write(_response(405, _error_body("use POST", "invalid_request_error")))
                return True
            return await self._chat(conn, req)
        if path in ("/stats", "/v1/stats"):
            conn.write(_response(200, json.dumps(self.stats.as_dict()).encode()))
            return True
        if path == "/stats/reset":
            self.stats.reset()
            conn.write(_response(200, json.dumps(self.stats.as_dict()).encode()))
            return True
        if path == "/config":
            if req.method == "POST":
                try:
                    self.configure(**json.loads(req.body or b"{}"))
                except (TypeError, ValueError) as exc:
                    conn.write(_response(400, _error_body(f"bad config: {exc}", "invalid_request_error")))
                    return True
            conn.write(_response(200, json.dumps(asdict(self.config)).encode()))
            return True
        if path in ("/v1/models", "/models"):
            model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "fake-llm"}
            conn.write(_response(200, json.dumps({"object": "list", "data": [model]}).encode()))
            return True
        if path in ("/healthz", "/readyz", "/health"):
            conn.write(_response(200, b'{"status":"ok"}'))
            return True
        conn.write(_response(404, _error_body(f"no route {req.path}", "invalid_request_error")))
        return True

    # -- chat completions -------------------------------------------------------------------------------
    def _reply(self, n: int, terminate: bool) -> list[str]:
        words = self._words_for(n)
        if terminate and words:
            words[-1] = (" " if len(words) > 1 else "") + self.config.terminate_word
        return words

    def _words_for(self, n: int) -> list[str]:
        words, cont = self._words, self._words_cont
        if n <= len(words):
            return words[:n]
        out = list(words)
        while len(out) < n:
            out.extend(cont[: n - len(out)])
        return out

    async def _chat(self, conn: _Connection, req: _Request) -> bool:
        stats = self.stats
        stats.requests += 1
        stats.last_request_at = time.time()
        try:
            payload = json.loads(req.body or b"{}")
            if not isinstance(payload, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            conn.write(_response(400, _error_body(f"invalid JSON body: {exc}", "invalid_request_error")))
            return True
        cfg = self.config
        h = req.headers
        try:
            ttft = float(h.get("x-fake-ttft-ms", cfg.ttft_ms)) / 1000.0
            token_s = float(h.get("x-fake-token-ms", cfg.token_ms)) / 1000.0
            n_tokens = int(h.get("x-fake-tokens", cfg.tokens))
        except ValueError:
            conn.write(_response(400, _error_body("bad x-fake-* header", "invalid_request_error")))
            return True
        max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
        finish = "stop"
        if isinstance(max_tokens, int) and 0 < max_tokens < n_tokens:
            n_tokens, finish = max_tokens, "length"
        terminate = cfg.terminate_turn > 0 and _count_turns(payload.get("messages")) >= cfg.terminate_turn
        error = h.get("x-fake-error", "")
        if not error and cfg.error_rate > 0 and self._rng.random() < cfg.error_rate:
            error = cfg.error_kind
        stream = bool(payload.get("stream"))
        model = str(payload.get("model") or cfg.model)
        self._ids += 1
        cid = f"chatcmpl-fake{os.getpid():x}{self._ids:08x}"
        created = int(time.time())
        prompt_tokens = _count_prompt_tokens(payload.get("messages"))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_tokens,
            "total_tokens": prompt_tokens + n_tokens,
        }
        if error == "http":
            stats.errors += 1
            conn.write(_response(500, _error_body("injected fake-llm error", "server_error", "fake_error")))
            return True
        stats.in_flight += 1
        if stream:
            stats.streaming_requests += 1
        loop = asyncio.get_running_loop()
        start = loop.time()
        finished = True
        try:
            if stream:
                opts = payload.get("stream_options")
                include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
                finished = await self._stream(
                    conn,
                    cid,
                    created,
                    model,
                    n_tokens,
                    ttft,
                    token_s,
                    start,
                    finish,
                    usage,
                    include_usage,
                    error,
                    terminate,
                )
            else:
                delay = start + ttft + token_s * max(0, n_tokens - 1) - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(self._reply(n_tokens, terminate)),
                            },
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
                conn.write(_response(200, json.dumps(body).encode()))
        except asyncio.CancelledError:
            stats.cancelled += 1
            stats.last_cancelled_at = time.time()
            raise
        finally:
            stats.in_flight -= 1
        if not finished:
            return True
        stats.completed += 1
        stats.last_completed_at = time.time()
        return True

    async def _stream(
        self,
        conn: _Connection,
        cid: str,
        created: int,
        model: str,
        n_tokens: int,
        ttft: float,
        token_s: float,
        start: float,
        finish: str,
        usage: dict[str, int],
        include_usage: bool,
        error: str,
        terminate: bool,
    ) -> bool:
        """Stream one reply; False when an error event was injected instead of the end."""
        loop = asyncio.get_running_loop()
        model_json = json.dumps(model)
        head = f'{{"id":"{cid}","object":"chat.completion.chunk","created":{created},"model":{model_json},'
        prefix = head + '"system_fingerprint":null,"choices":[{"index":0,"delta":'
        usage_field = ',"usage":null' if include_usage else ""
        suffix = ',"logprobs":null,"finish_reason":null}]' + usage_field + "}"
        conn.write(_STREAM_HEAD)
        conn.write(_event(prefix + '{"role":"assistant","content":""}' + suffix))
        words = self._reply(n_tokens, terminate)
        for i, word in enumerate(words):
            delay = start + ttft + token_s * i - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if error == "stream" and i >= min(3, n_tokens - 1):
                self.stats.errors += 1
                err = _error_body("injected fake-llm stream error", "server_error", "fake_error")
                conn.write(_chunk(b"data: " + err + b"\n\n") + b"0\r\n\r\n")
                return False
            conn.write(_event(prefix + '{"content":' + json.dumps(word) + "}" + suffix))
            await conn.drain()
        last = prefix + '{},"logprobs":null,"finish_reason":"' + finish + '"}]' + usage_field + "}"
        out = [_event(last)]
        if include_usage:
            usage_chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [],
                "usage": usage,
            }
            out.append(_event(json.dumps(usage_chunk)))
        out.append(_chunk(b"data: [DONE]\n\n"))
        out.append(b"0\r\n\r\n")
        conn.write(b"".join(out))
        return True


# ---------------------------------------------------------------------------------------------------------
# Running it: CLI, subprocess handle, thread handle
# ---------------------------------------------------------------------------------------------------------
def _http_json(url: str, method: str = "GET", timeout: float = 5.0) -> dict[str, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


class _Handle(StopOnExit):
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client (or ``LLM_BASE_URL``) needs: ``http://host:port/v1``."""
        return f"{self.url}/v1"

    def stats(self) -> dict[str, Any]:
        return _http_json(f"{self.url}/stats")

    def reset_stats(self) -> dict[str, Any]:
        return _http_json(f"{self.url}/stats/reset", method="POST")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change the timing/length/error defaults of the running fake LLM (``FakeLLMConfig`` fields)."""
        req = urllib.request.Request(
            f"{self.url}/config",
            method="POST",
            data=json.dumps(changes).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data


class FakeLLMProcess(_Handle):
    """A fake LLM running in its own process (``python -m loadtests.fake_llm``)."""

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


def _cli_args(config: FakeLLMConfig) -> list[str]:
    args = [
        f"--ttft-ms={config.ttft_ms}",
        f"--token-ms={config.token_ms}",
        f"--tokens={config.tokens}",
        f"--error-rate={config.error_rate}",
        f"--error-kind={config.error_kind}",
        f"--model={config.model}",
    ]
    if config.reply:
        args.append(f"--reply={config.reply}")
    if config.seed is not None:
        args.append(f"--seed={config.seed}")
    args += [f"--terminate-word={config.terminate_word}", f"--terminate-turn={config.terminate_turn}"]
    return args


def start_fake_llm_process(
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    log_path: str | os.PathLike[str] | None = None,
    startup_timeout: float = 20.0,
    **opts: Any,
) -> FakeLLMProcess:
    """Start the fake LLM as a subprocess; ``opts`` are ``FakeLLMConfig`` fields. Port 0: a free port."""
    config = FakeLLMConfig(**opts)
    repo_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = repo_root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-m",
        "loadtests.fake_llm",
        "--host",
        host,
        "--port",
        str(port),
        *_cli_args(config),
    ]
    stderr: Any = subprocess.DEVNULL
    log_file = None
    if log_path is not None:
        log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        stderr = log_file
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=repo_root)
    if log_file is not None:
        log_file.close()
    assert proc.stdout is not None
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(startup_timeout)
    line = result[0].decode().strip() if result else ""
    if not line.startswith("FAKE_LLM_PORT="):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"fake LLM did not start (got {line!r}, exit code {proc.poll()})")
    return FakeLLMProcess(proc, host, int(line.split("=", 1)[1]))


class FakeLLMThread(_Handle):
    """A fake LLM served by an event loop in a background thread of this process."""

    def __init__(self, config: FakeLLMConfig, host: str, port: int) -> None:
        self.host = host
        self.server = FakeLLMServer(config)
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

    @property
    def live_stats(self) -> FakeLLMStats:
        """The counters themselves (no HTTP round trip)."""
        return self.server.stats

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def start_fake_llm_thread(port: int = 0, host: str = "127.0.0.1", **opts: Any) -> FakeLLMThread:
    """Start the fake LLM in a background thread of this process; ``opts`` are ``FakeLLMConfig`` fields."""
    return FakeLLMThread(FakeLLMConfig(**opts), host, port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.fake_llm", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000, help="0 picks a free port (printed on stdout)")
    p.add_argument("--ttft-ms", type=float, default=FakeLLMConfig.ttft_ms, help="time to first token")
    p.add_argument("--token-ms", type=float, default=FakeLLMConfig.token_ms, help="delay between tokens")
    p.add_argument("--tokens", type=int, default=FakeLLMConfig.tokens, help="reply length in tokens")
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests that fail (0..1)")
    p.add_argument("--error-kind", choices=["http", "stream"], default="http")
    p.add_argument("--reply", default="", help="reply words, cycled to --tokens tokens")
    p.add_argument("--model", default=FakeLLMConfig.model)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--terminate-word", default=FakeLLMConfig.terminate_word)
    p.add_argument(
        "--terminate-turn",
        type=int,
        default=0,
        help="end replies with --terminate-word from this many non-system messages on (0: never)",
    )
    return p.parse_args(argv)


async def _serve(config: FakeLLMConfig, host: str, port: int) -> None:
    server = FakeLLMServer(config)
    bound = await server.start(host, port)
    print(f"FAKE_LLM_PORT={bound}", flush=True)
    print(
        f"fake LLM on http://{host}:{bound}/v1 ttft={config.ttft_ms}ms token={config.token_ms}ms "
        f"tokens={config.tokens} error_rate={config.error_rate}",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    config = FakeLLMConfig(
        ttft_ms=a.ttft_ms,
        token_ms=a.token_ms,
        tokens=a.tokens,
        error_rate=a.error_rate,
        error_kind=a.error_kind,
        reply=a.reply,
        model=a.model,
        seed=a.seed,
        terminate_word=a.terminate_word,
        terminate_turn=a.terminate_turn,
    )
    asyncio.run(_serve(config, a.host, a.port))


if __name__ == "__main__":
    main()
