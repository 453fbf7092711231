"""A small, cheap OpenAI-compatible fake LLM server for load tests and the lead's tests.

It speaks just enough HTTP/1.1 (``loadtests/fake_http.py``: raw ``asyncio.Protocol``, keep-alive, chunked
streaming) to serve:

- ``POST /v1/chat/completions`` (also ``/chat/completions``): streaming and not, ``usage``,
  ``stream_options.include_usage``, ``max_tokens``/``max_completion_tokens`` (``finish_reason: length``);
- ``GET /v1/models``, ``GET /healthz``;
- ``GET /stats`` (``POST /stats/reset``): chat requests received, completed, cancelled by the client, errors
  injected, in flight, open streams and connections, and the timestamps of the last ones;
- ``GET /config``, ``POST /config`` (JSON with ``FakeLLMConfig`` fields): read or change the defaults.

Timing: the first content token is sent ``ttft_ms`` after the request, then one token every ``token_ms``
(on absolute deadlines, so a busy event loop does not stretch a reply). Per request the defaults can be
overridden with headers ``x-fake-ttft-ms``, ``x-fake-token-ms``, ``x-fake-tokens`` and ``x-fake-error``
(``http`` or ``stream``).

Run it: ``python -m loadtests.fake_llm --port 9000 --ttft-ms 100 --token-ms 10 --tokens 32``.
From Python: ``start_fake_llm_process(port=0, ttft_ms=...)`` (a subprocess) or ``start_fake_llm_thread(...)``
(in-process, in a background thread); both return a handle with ``base_url``, ``stats()``, ``stop()``.
Replies scripted per request (tool calls, faults, ...): ``loadtests/scripted_llm.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from loadtests.fake_http import (
    STREAM_HEAD,
    ChunkFormat,
    Connection,
    FakeServer,
    Outcome,
    Request,
    ServerHandle,
    ServerStats,
    SubprocessHandle,
    ThreadHandle,
    bad_request,
    completion_body,
    count_prompt_tokens,
    error_body,
    include_usage,
    json_response,
    max_tokens_of,
    response,
    serve_until_signalled,
    spawn,
    stream_error,
    usage_of,
)

DEFAULT_REPLY = (
    "The quick brown fox jumps over the lazy dog while the agents discuss the plan and write a short "
    "answer for the user about load tests streaming tokens latency throughput and overhead"
)


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


def _count_turns(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") != "system")


class FakeLLMServer(FakeServer):
    """The load fake: every reply is ``tokens`` words of one sentence, timed by the config."""

    def __init__(self, config: FakeLLMConfig | None = None) -> None:
        super().__init__()
        self.config = config or FakeLLMConfig()
        self._rng = random.Random(self.config.seed)
        self.configure()

    def configure(self, **changes: Any) -> None:
        """Change the defaults of the next requests (``FakeLLMConfig`` fields)."""
        config = FakeLLMConfig(**{**asdict(self.config), **changes})
        self.config = config
        words = (config.reply or DEFAULT_REPLY).split()
        self._words = [w if i == 0 else " " + w for i, w in enumerate(words)]
        self._words_cont = [" " + w for w in words]

    @property
    def model_id(self) -> str:
        return self.config.model

    async def route(self, conn: Connection, req: Request, path: str) -> bool | None:
        if path != "/config":
            return None
        if req.method == "POST":
            try:
                self.configure(**req.json())
            except (TypeError, ValueError) as exc:
                conn.write(bad_request(f"bad config: {exc}"))
                return True
        conn.write(json_response(asdict(self.config)))
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

    async def chat(self, conn: Connection, req: Request, payload: dict[str, Any], outcome: Outcome) -> bool:
        cfg = self.config
        h = req.headers
        try:
            ttft = float(h.get("x-fake-ttft-ms", cfg.ttft_ms)) / 1000.0
            token_s = float(h.get("x-fake-token-ms", cfg.token_ms)) / 1000.0
            n_tokens = int(h.get("x-fake-tokens", cfg.tokens))
        except ValueError:
            outcome.status = "rejected"
            conn.write(bad_request("bad x-fake-* header"))
            return True
        max_tokens = max_tokens_of(payload)
        finish = "stop"
        if max_tokens is not None and max_tokens < n_tokens:
            n_tokens, finish = max_tokens, "length"
        terminate = cfg.terminate_turn > 0 and _count_turns(payload.get("messages")) >= cfg.terminate_turn
        error = h.get("x-fake-error", "")
        if not error and cfg.error_rate > 0 and self._rng.random() < cfg.error_rate:
            error = cfg.error_kind
        if error == "http":
            outcome.status = "fault"
            conn.write(response(500, error_body("injected fake-llm error", "server_error", "fake_error")))
            return True
        model = str(payload.get("model") or cfg.model)
        cid = self.completion_id()
        created = int(time.time())
        usage = usage_of(count_prompt_tokens(payload.get("messages")), n_tokens)
        loop = asyncio.get_running_loop()
        start = loop.time()
        words = self._reply(n_tokens, terminate)
        if not payload.get("stream"):
            delay = start + ttft + token_s * max(0, n_tokens - 1) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            message = {"role": "assistant", "content": "".join(words)}
            conn.write(response(200, completion_body(cid, created, model, message, finish, usage)))
            return True
        fmt = ChunkFormat(cid, created, model, include_usage(payload))
        conn.write(STREAM_HEAD)
        conn.write(fmt.delta('{"role":"assistant","content":""}'))
        for i, word in enumerate(words):
            delay = start + ttft + token_s * i - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if error == "stream" and i >= min(3, n_tokens - 1):
                outcome.status = "fault"
                conn.write(stream_error("injected fake-llm stream error", "server_error", "fake_error"))
                return True
            conn.write(fmt.content(word))
            await conn.drain()
        conn.write(fmt.end(finish, usage))
        return True


# ---------------------------------------------------------------------------------------------------------
# Running it: CLI, subprocess handle, thread handle
# ---------------------------------------------------------------------------------------------------------
class _Control(ServerHandle):
    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change the timing/length/error defaults of the running fake LLM (``FakeLLMConfig`` fields)."""
        data: dict[str, Any] = self.post("/config", changes)
        return data


class FakeLLMProcess(SubprocessHandle, _Control):
    """A fake LLM running in its own process (``python -m loadtests.fake_llm``)."""


class FakeLLMThread(ThreadHandle, _Control):
    """A fake LLM served by an event loop in a background thread of this process."""

    server: FakeLLMServer

    def __init__(self, config: FakeLLMConfig, host: str, port: int) -> None:
        super().__init__(FakeLLMServer(config), host, port)

    @property
    def live_stats(self) -> ServerStats:
        """The counters themselves (no HTTP round trip)."""
        return self.server.stats


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
    args = ["--host", host, "--port", str(port), *_cli_args(FakeLLMConfig(**opts))]
    proc, bound = spawn(
        "loadtests.fake_llm", args, "FAKE_LLM_PORT", log_path=log_path, startup_timeout=startup_timeout
    )
    return FakeLLMProcess(proc, host, bound)


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
    banner = (
        f"fake LLM ttft={config.ttft_ms}ms token={config.token_ms}ms tokens={config.tokens} "
        f"error_rate={config.error_rate}"
    )
    asyncio.run(serve_until_signalled(FakeLLMServer(config), a.host, a.port, "FAKE_LLM_PORT", banner))


if __name__ == "__main__":
    main()
