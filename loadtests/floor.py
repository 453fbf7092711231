"""The floor: the cheapest honest FastAPI/uvicorn SSE endpoint, to measure the service against.

``POST /v1/chat/completions`` streams OpenAI chat-completion chunks with the fake LLM's timing and no agents.
Two modes, chosen per request with the extension field ``x_floor`` (ignored by real servers):

- ``{"calls": c, "chunks": n}``: sleep like ``c`` sequential LLM calls (each ``ttft_ms`` then one chunk per
  ``token_ms``) and emit ``n`` content chunks in total, generated in process (the "embedded model" floor);
- ``{"calls": c, "proxy": true}``: make ``c`` sequential streaming calls to the upstream fake LLM
  (``--upstream``) with httpx and re-emit every content token as a chunk (the "through ``LLM_BASE_URL``"
  floor).

Every chunk is built with ``json.dumps``, like any service would. No logging, no middleware, no validation
beyond ``request.json()``.

Run it: ``python -m loadtests.floor --port 0 --ttft-ms 50 --token-ms 5 --upstream http://127.0.0.1:9000/v1``
(prints ``FLOOR_PORT=<port>`` on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

WORD = " tok"


def create_floor_app(
    ttft_ms: float = 50.0, token_ms: float = 5.0, tokens: int = 32, upstream: str | None = None
) -> FastAPI:
    ttft_s, token_s = ttft_ms / 1000.0, token_ms / 1000.0
    client: httpx.AsyncClient | None = None
    if upstream:
        client = httpx.AsyncClient(
            base_url=upstream.rstrip("/"),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=2048),
            timeout=httpx.Timeout(600.0, connect=10.0),
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if client is not None:
            await client.aclose()

    app = FastAPI(title="floor", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> str:
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            "usage": None,
        }
        return f"data: {json.dumps(body)}\n\n"

    async def embedded_tokens(calls: int, chunks: int) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        if calls <= 0:  # no model call at all: the chunks come at once
            for _ in range(chunks):
                yield WORD
            return
        per_call = [chunks // calls + (1 if i < chunks % calls else 0) for i in range(calls)]
        for n in per_call:
            start = loop.time()
            for i in range(n):
                delay = start + ttft_s + token_s * i - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                yield WORD

    async def proxied_tokens(calls: int, messages: Any) -> AsyncIterator[str]:
        assert client is not None, "start the floor with --upstream for proxy mode"
        body = {"model": "fake", "messages": messages, "stream": True}
        for _ in range(calls):
            async with client.stream("POST", "/chat/completions", json=body) as resp:
                resp.raise_for_status()
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    choices = data.get("choices") or []
                    if choices and (content := choices[0].get("delta", {}).get("content")):
                        yield content

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        payload = await request.json()
        opts = payload.get("x_floor") or {}
        calls = int(opts.get("calls", 1))
        chunks = int(opts.get("chunks", tokens))
        model = str(payload.get("model", "floor"))
        messages = payload.get("messages") or []
        proxy = bool(opts.get("proxy"))
        source = proxied_tokens(calls, messages) if proxy and calls > 0 else embedded_tokens(calls, chunks)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict)) // 4

        if not payload.get("stream"):
            parts = [token async for token in source]
            return JSONResponse(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(parts)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": len(parts),
                        "total_tokens": prompt_tokens + len(parts),
                    },
                }
            )

        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[str]:
            yield chunk(cid, created, model, {"role": "assistant", "content": ""}, None)
            n = 0
            async for token in source:
                n += 1
                yield chunk(cid, created, model, {"content": token}, None)
            yield chunk(cid, created, model, {}, "stop")
            if include_usage:
                usage = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": n,
                        "total_tokens": prompt_tokens + n,
                    },
                }
                yield f"data: {json.dumps(usage)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/healthz")
    @app.get("/readyz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": "floor", "object": "model", "created": 0, "owned_by": "floor"}],
        }

    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--token-ms", type=float, default=5.0)
    p.add_argument("--tokens", type=int, default=32, help="content chunks when the request does not say")
    p.add_argument("--upstream", default=None, help="fake LLM base URL (…/v1) for proxy mode")
    a = p.parse_args(argv)
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the listening socket says
    # so; with proto 0, Nagle + delayed ACKs hold small SSE chunks for up to 40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((a.host, a.port))
    print(f"FLOOR_PORT={sock.getsockname()[1]}", flush=True)
    app = create_floor_app(a.ttft_ms, a.token_ms, a.tokens, a.upstream)
    config = uvicorn.Config(
        app, access_log=False, log_level="warning", timeout_keep_alive=75, backlog=4096, lifespan="on"
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
