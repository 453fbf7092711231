"""A lean asyncio load generator for OpenAI-compatible streaming chat completions (used by the bench).

Raw HTTP/1.1 over ``asyncio`` streams (keep-alive, chunked transfer encoding, SSE parsing): it costs far
less CPU per stream than Locust or httpx, which matters when the load generator shares 2 cores with the
server under test.

Two modes:

- closed loop: ``--concurrency N`` workers, each one connection, send a streaming request, read it to the
  end, repeat until ``--duration`` seconds have passed (or ``--max-streams``); streams in flight at the
  deadline are finished, so the server's CPU over the run belongs to completed (or failed) streams only;
- open streams: ``--open N`` streams started once over ``--ramp`` seconds, each on its own connection,
  all awaited (for the "1,000 open streams" check).

Every stream is validated like a strict client would: HTTP 200, ``text/event-stream``, every ``data:``
event JSON with ``object: chat.completion.chunk`` and the same ``id`` and ``created``, no ``error`` event,
a final ``[DONE]``. The result is one JSON object on stdout (or ``--output``).

Example:
``python -m loadtests.loadgen --url http://127.0.0.1:8000 --model echo --concurrency 16 --duration 5``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class StreamError(Exception):
    """A broken stream; ``kind`` is the error category reported in the results."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass
class StreamResult:
    ttft_s: float
    total_s: float
    chunks: int
    completion_tokens: int | None
    keep_alive: bool


@dataclass
class LoadResult:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    started: int = 0
    aborted: int = 0  # still running when the drain time ran out (not errors)

    def add_stream(self, res: StreamResult) -> None:
        self.ttft.append(res.ttft_s)
        self.total.append(res.total_s)
        self.chunks.append(res.chunks)
        if res.completion_tokens is not None:
            self.tokens.append(res.completion_tokens)

    def add_error(self, exc: BaseException) -> None:
        kind = exc.kind if isinstance(exc, StreamError) else type(exc).__name__
        self.errors[kind] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(str(exc)[:300] or kind)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize_ms(values_s: list[float]) -> dict[str, float | None]:
    ms = [v * 1000.0 for v in values_s]
    out: dict[str, float | None] = {f"p{q}": percentile(ms, q) for q in (50, 90, 99)}
    out["mean"] = sum(ms) / len(ms) if ms else None
    out["max"] = max(ms) if ms else None
    return out


class Target:
    def __init__(self, url: str, api_key: str | None, body: dict[str, Any]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise SystemExit("loadgen speaks plain http only (use Locust for https targets)")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        base = parts.path.rstrip("/")
        path = base + "/chat/completions" if base.endswith("/v1") else base + "/v1/chat/completions"
        payload = json.dumps(body).encode()
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: text/event-stream",
            f"Content-Length: {len(payload)}",
        ]
        if api_key:
            head.append(f"Authorization: Bearer {api_key}")
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port, limit=1 << 20)


async def _read_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise StreamError("connection_closed", "before the response headers") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise StreamError("bad_response", lines[0][:100]) from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _body_pieces(reader: asyncio.StreamReader, headers: dict[str, str]) -> Any:
    """Yield the raw body bytes (de-chunked)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        # parse every complete chunk already received before awaiting more bytes (one await per read,
        # not two per chunk)
        raw = bytearray()
        pos = 0
        while True:
            out: list[bytes] = []
            while True:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(raw[pos:eol]).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # last chunk; trailers (normally none) end with an empty line
                    if raw.find(b"\r\n\r\n", eol) < 0:
                        break
                    if out:
                        yield b"".join(out)
                    return
                if len(raw) < eol + 2 + size + 2:
                    break
                out.append(bytes(raw[eol + 2 : eol + 2 + size]))
                pos = eol + 2 + size + 2
            if out:
                yield b"".join(out)
            if pos:
                del raw[:pos]
                pos = 0
            data = await reader.read(1 << 16)
            if not data:
                raise asyncio.IncompleteReadError(bytes(raw), None)
            raw += data
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 1 << 16))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(data)
            yield data
    else:
        while data := await reader.read(1 << 16):
            yield data


async def run_one_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> StreamResult:
    t0 = time.perf_counter()
    writer.write(request)
    status, headers = await _read_headers(reader)
    keep_alive = headers.get("connection", "").lower() != "close"
    if status != 200:
        body = b"".join([piece async for piece in _body_pieces(reader, headers)])
        raise StreamError(f"http_{status}", body[:200].decode("utf-8", "replace"))
    if not headers.get("content-type", "").startswith("text/event-stream"):
        raise StreamError("not_sse", headers.get("content-type", ""))
    first: float | None = None
    chunks = 0
    tokens: int | None = None
    done = False
    cid: Any = None
    created: Any = None
    buf = b""
    try:
        async for piece in _body_pieces(reader, headers):
            buf += piece
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            while (end := buf.find(b"\n\n")) >= 0:
                event, buf = buf[:end], buf[end + 2 :]
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue  # comments (": ping"), event:, id:, retry:
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    if done:
                        raise StreamError("data_after_done")
                    try:
                        obj = json.loads(data)
                    except ValueError as exc:
                        raise StreamError("bad_json", data[:100].decode("utf-8", "replace")) from exc
                    if "error" in obj:
                        raise StreamError("error_event", json.dumps(obj["error"])[:200])
                    if obj.get("object") != "chat.completion.chunk":
                        raise StreamError("bad_object", str(obj.get("object")))
                    if cid is None:
                        cid, created = obj.get("id"), obj.get("created")
                        if not cid:
                            raise StreamError("bad_id", "missing id")
                    elif obj.get("id") != cid or obj.get("created") != created:
                        raise StreamError("bad_id", f"{obj.get('id')} != {cid}")
                    choices = obj.get("choices")
                    if choices:
                        delta = choices[0].get("delta") or {}
                        # A token a person sees: the answer's, or the team's work (reasoning_content).
                        if delta.get("content") or delta.get("reasoning_content"):
                            chunks += 1
                            if first is None:
                                first = time.perf_counter()
                    usage = obj.get("usage")
                    if usage:
                        tokens = usage.get("completion_tokens")
    except asyncio.IncompleteReadError as exc:
        raise StreamError("incomplete", "connection closed mid-stream") from exc
    if not done:
        raise StreamError("no_done", "stream ended without [DONE]")
    end_t = time.perf_counter()
    return StreamResult(
        ttft_s=(first if first is not None else end_t) - t0,
        total_s=end_t - t0,
        chunks=chunks,
        completion_tokens=tokens,
        keep_alive=keep_alive,
    )


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


async def closed_loop(
    target: Target,
    concurrency: int,
    duration: float,
    timeout: float,  # noqa: ASYNC109 - a per-stream deadline, not the call's
    max_streams: int | None = None,
    ramp: float | None = None,
    drain: float = 60.0,
) -> tuple[LoadResult, float]:
    """Closed loop; after ``duration``, streams in flight get ``drain`` more seconds, then are aborted."""
    result = LoadResult()
    start = time.perf_counter()
    deadline = start + duration
    ramp = min(1.0, duration * 0.2) if ramp is None else ramp

    def may_start() -> bool:
        return time.perf_counter() < deadline and (max_streams is None or result.started < max_streams)

    async def worker(index: int) -> None:
        if ramp > 0 and concurrency > 1:
            await asyncio.sleep(ramp * index / concurrency)
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while may_start():
            result.started += 1
            result.in_flight += 1
            result.max_in_flight = max(result.max_in_flight, result.in_flight)
            try:
                async with asyncio.timeout(timeout):
                    if writer is None:
                        reader, writer = await target.connect()
                    assert reader is not None
                    res = await run_one_stream(reader, writer, target.request)
            except (StreamError, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                if isinstance(exc, TimeoutError):
                    exc = StreamError("timeout", f"no complete stream within {timeout}s")
                result.add_error(exc)
                _close(writer)
                reader = writer = None
                await asyncio.sleep(0.01)
            else:
                result.add_stream(res)
                if not res.keep_alive:
                    _close(writer)
                    reader = writer = None
            finally:
                result.in_flight -= 1
        _close(writer)

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
    _done, pending = await asyncio.wait(tasks, timeout=drain)
    if pending:
        result.aborted = result.in_flight
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return result, time.perf_counter() - start


async def open_streams(
    target: Target,
    count: int,
    ramp: float,
    timeout: float,  # noqa: ASYNC109 - a per-stream deadline
) -> tuple[LoadResult, float]:
    result = LoadResult()
    start = time.perf_counter()

    async def one(index: int) -> None:
        if ramp > 0:
            await asyncio.sleep(ramp * index / count)
        writer: asyncio.StreamWriter | None = None
        result.started += 1
        result.in_flight += 1
        result.max_in_flight = max(result.max_in_flight, result.in_flight)
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await target.connect()
                res = await run_one_stream(reader, writer, target.request)
        except (StreamError, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            if isinstance(exc, TimeoutError):
                exc = StreamError("timeout", f"no complete stream within {timeout}s")
            result.add_error(exc)
        else:
            result.add_stream(res)
        finally:
            result.in_flight -= 1
            _close(writer)

    await asyncio.gather(*(one(i) for i in range(count)))
    return result, time.perf_counter() - start


def report(result: LoadResult, elapsed: float, params: dict[str, Any]) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    completed = len(result.total)
    return {
        "params": params,
        "started": result.started,
        "completed": completed,
        "failed": sum(result.errors.values()),
        "aborted": result.aborted,
        "errors": dict(result.errors),
        "error_samples": result.error_samples,
        "elapsed_s": elapsed,
        "streams_per_s": completed / elapsed if elapsed > 0 else 0.0,
        "max_in_flight": result.max_in_flight,
        "ttft_ms": summarize_ms(result.ttft),
        "total_ms": summarize_ms(result.total),
        "chunks_mean": sum(result.chunks) / completed if completed else None,
        "completion_tokens_mean": sum(result.tokens) / len(result.tokens) if result.tokens else None,
        "loadgen_cpu_ms": (usage.ru_utime + usage.ru_stime) * 1000.0,
    }


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def build_body(model: str, prompt: str, max_tokens: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if max_tokens:
        body["max_tokens"] = max_tokens
    body.update(extra)
    return body


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", default="echo")
    p.add_argument("--api-key", default=None)
    p.add_argument("--prompt", default="Say something about load testing.")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--extra-json", default="{}", help="JSON object merged into the request body")
    p.add_argument("--concurrency", type=int, default=1, help="closed loop: open streams at all times")
    p.add_argument(
        "--duration", type=float, default=5.0, help="closed loop: seconds to keep starting streams"
    )
    p.add_argument("--max-streams", type=int, default=None, help="closed loop: stop after this many streams")
    p.add_argument("--open", type=int, default=0, help="open-streams mode: start this many streams once")
    p.add_argument("--ramp", type=float, default=None, help="seconds over which to start the streams")
    p.add_argument("--timeout", type=float, default=120.0, help="per-stream timeout (s)")
    p.add_argument(
        "--drain",
        type=float,
        default=60.0,
        help="closed loop: seconds granted to streams in flight at the end",
    )
    p.add_argument("--output", default="-", help="where to write the JSON result (- for stdout)")
    return p.parse_args(argv)


async def amain(a: argparse.Namespace) -> dict[str, Any]:
    body = build_body(a.model, a.prompt, a.max_tokens, json.loads(a.extra_json))
    target = Target(a.url, a.api_key, body)
    params = {k: v for k, v in vars(a).items() if k not in ("api_key", "output")}
    if a.open:
        result, elapsed = await open_streams(target, a.open, a.ramp if a.ramp is not None else 1.0, a.timeout)
    else:
        result, elapsed = await closed_loop(
            target, a.concurrency, a.duration, a.timeout, a.max_streams, a.ramp, a.drain
        )
    return report(result, elapsed, params)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    raise_nofile_limit()
    out = json.dumps(asyncio.run(amain(a)), indent=1)
    if a.output == "-":
        sys.stdout.write(out + "\n")
    else:
        with open(a.output, "w", encoding="utf-8") as fh:
            fh.write(out + "\n")


if __name__ == "__main__":
    main()
