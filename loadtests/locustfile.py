"""Locust campaigns against an OpenAI-compatible chat-completions endpoint (the service, or any deployment).

Scenarios, by user class (``locust -f loadtests/locustfile.py StreamingUser``) or by tag (``--tags stream``):

- ``StreamingUser`` (tag ``stream``): the main one; streaming chat completions with ``include_usage``;
- ``NonStreamingUser`` (tag ``nonstream``): plain chat completions;
- ``MixedUser`` (tag ``mixed``): a realistic profile with think time: mostly short streamed questions, some
  multi-turn conversations, some non-streamed calls, a few ``GET /v1/models``;
- ``SpikeUser`` (tag ``spike``, or ``LOADTEST_SCENARIO=spike``): streaming users driven by ``SpikeShape``:
  a baseline of a fifth of ``--users``, a sudden jump to ``--users``, and back, within ``--run-time``.

With no class and no tag, ``StreamingUser``, ``NonStreamingUser`` and ``MixedUser`` run together (3:1:1).

Custom metrics (request type ``SSE`` in the stats, CSV and HTML report; the "response time" column holds
the value, in ms or per second as named), per model:

- ``time_to_first_token [model]`` (ms from sending the request to the first token a person sees: a
  non-empty ``content`` delta, or ``reasoning_content``, the team's work),
- ``inter_chunk_latency [model]`` (ms between consecutive such chunks),
- ``stream_total_time [model]`` (ms from sending the request to ``[DONE]``),
- ``chunks_per_s [model]`` (those chunks / total stream time),
- ``tokens_per_s [model]`` (``usage.completion_tokens`` of the usage chunk / total stream time).

A stream counts as a failure when: HTTP status is not 200, the content type is not ``text/event-stream``,
an event is not JSON or carries ``error``, the chunks' ``id``/``created``/``object`` are wrong or change,
there is no answer (``content``) at all, or ``[DONE]`` never comes.

Options (also as environment variables): ``--model`` (``LOCUST_MODEL``, comma-separated to spread over
models), ``--api-key`` (``LOCUST_API_KEY``, else ``OPENAI_API_KEY``), ``--prompt``, ``--max-tokens``,
``--request-timeout``. Host: ``--host http://127.0.0.1:8000`` (with or without ``/v1``).

Headless example:
``locust -f loadtests/locustfile.py StreamingUser --headless -u 32 -r 8 -t 60s --host http://127.0.0.1:8000
--csv reports/run --html reports/run.html``
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any

import gevent
from locust import HttpUser, LoadTestShape, between, events, tag, task
from locust.env import Environment
from locust.stats import CSV_STATS_INTERVAL_SEC

DEFAULT_PROMPT = "Explain in a few sentences why streaming responses matter for chat applications."
LONG_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "We are planning a load test for a chat service."},
    {"role": "assistant", "content": "Good idea. What do you want to measure first?"},
    {"role": "user", "content": "Time to first token and the cost of every stream. Where do we start?"},
]


class StreamFailure(Exception):
    """A broken stream (reported as a Locust failure)."""


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument(
        "--model", default="echo", env_var="LOCUST_MODEL", help="model id(s), comma-separated (default echo)"
    )
    parser.add_argument(
        "--api-key",
        default="",
        env_var="LOCUST_API_KEY",
        is_secret=True,
        help="Bearer key (default: $OPENAI_API_KEY if set)",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, env_var="LOCUST_PROMPT", help="user message")
    parser.add_argument(
        "--max-tokens", type=int, default=0, env_var="LOCUST_MAX_TOKENS", help="max_tokens (0: not sent)"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=300.0, env_var="LOCUST_REQUEST_TIMEOUT", help="seconds"
    )


@events.test_start.add_listener
def _drop_users_without_tasks(environment: Environment, **_kwargs: Any) -> None:
    """After ``--tags`` filtering, a class may have no task left: do not spawn it (Locust would fail)."""
    keep = [cls for cls in environment.user_classes if cls.tasks]
    if keep and len(keep) != len(environment.user_classes):
        environment.user_classes[:] = keep


@events.test_stop.add_listener
def _let_csv_writer_catch_up(environment: Environment, **_kwargs: Any) -> None:
    """Streams that end during ``--stop-timeout`` would miss the CSV (written once a second): wait a pass."""
    if getattr(environment.parsed_options, "csv_prefix", None):
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.3)


def _chat_path(base: str | None) -> str:
    return "/chat/completions" if (base or "").rstrip("/").endswith("/v1") else "/v1/chat/completions"


def _models_path(base: str | None) -> str:
    return "/models" if (base or "").rstrip("/").endswith("/v1") else "/v1/models"


class ChatClientMixin(HttpUser):
    """Shared request code; not a scenario by itself."""

    abstract = True

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.model_ids = [
            m.strip() for m in str(getattr(opts, "model", "echo") or "echo").split(",") if m.strip()
        ]
        self.prompt = str(getattr(opts, "prompt", DEFAULT_PROMPT) or DEFAULT_PROMPT)
        self.max_tokens = int(getattr(opts, "max_tokens", 0) or 0)
        self.timeout = float(getattr(opts, "request_timeout", 300.0) or 300.0)
        key = str(getattr(opts, "api_key", "") or os.environ.get("OPENAI_API_KEY", ""))
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.chat_path = _chat_path(self.host)
        self.models_path = _models_path(self.host)

    # -- metrics --------------------------------------------------------------------------------------------
    def _metric(self, name: str, model: str, value: float) -> None:
        self.environment.events.request.fire(
            request_type="SSE",
            name=f"{name} [{model}]",
            response_time=value,
            response_length=0,
            exception=None,
            context={},
        )

    def _body(self, model: str, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        return body

    # -- streaming ------------------------------------------------------------------------------------------
    def stream_chat(self, messages: list[dict[str, str]] | None = None, label: str = "chat stream") -> None:
        model = random.choice(self.model_ids)
        body = self._body(model, messages or [{"role": "user", "content": self.prompt}], True)
        t0 = time.perf_counter()
        with self.client.post(
            self.chat_path,
            data=json.dumps(body),
            headers={**self.headers, "Accept": "text/event-stream"},
            stream=True,
            catch_response=True,
            timeout=self.timeout,
            name=f"{label} [{model}]",
        ) as resp:
            try:
                stats = self._read_stream(resp, t0)
            except StreamFailure as exc:
                resp.failure(str(exc))
                return
            except Exception as exc:  # connection reset, read timeout, ...
                resp.failure(f"broken stream: {type(exc).__name__}: {exc}")
                return
            finally:
                resp.close()
            resp.success()
        first, gaps, end, chunks, tokens = stats
        total_s = end - t0
        self._metric("time_to_first_token", model, (first - t0) * 1000.0)
        for gap in gaps:
            self._metric("inter_chunk_latency", model, gap * 1000.0)
        self._metric("stream_total_time", model, total_s * 1000.0)
        if total_s > 0:
            self._metric("chunks_per_s", model, chunks / total_s)
            if tokens is not None:
                self._metric("tokens_per_s", model, tokens / total_s)

    @staticmethod
    def _read_stream(resp: Any, t0: float) -> tuple[float, list[float], float, int, int | None]:
        if resp.status_code != 200:
            raise StreamFailure(f"HTTP {resp.status_code}: {resp.text[:200]}")
        ctype = resp.headers.get("content-type", "")
        if not ctype.startswith("text/event-stream"):
            raise StreamFailure(f"not an event stream: {ctype!r}")
        first: float | None = None
        last: float | None = None
        gaps: list[float] = []
        chunks = 0
        answered = False
        tokens: int | None = None
        done = False
        cid: Any = None
        created: Any = None
        buf = b""
        for piece in resp.iter_content(chunk_size=None):
            buf += piece
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            while (cut := buf.find(b"\n\n")) >= 0:
                event, buf = buf[:cut], buf[cut + 2 :]
                now = time.perf_counter()
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue  # ": ping" keep-alives and other SSE fields
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    if done:
                        raise StreamFailure("data after [DONE]")
                    try:
                        obj = json.loads(data)
                    except ValueError as exc:
                        raise StreamFailure(f"event is not JSON: {data[:80]!r}") from exc
                    if "error" in obj:
                        raise StreamFailure(f"error event: {json.dumps(obj['error'])[:200]}")
                    if obj.get("object") != "chat.completion.chunk":
                        raise StreamFailure(f"wrong object {obj.get('object')!r}")
                    if cid is None:
                        cid, created = obj.get("id"), obj.get("created")
                        if not cid:
                            raise StreamFailure("chunk without id")
                    elif obj.get("id") != cid or obj.get("created") != created:
                        raise StreamFailure(f"chunk id changed: {obj.get('id')!r} != {cid!r}")
                    choices = obj.get("choices") or []
                    delta = (choices[0].get("delta") or {}) if choices else {}
                    answered = answered or bool(delta.get("content"))
                    # A token a person sees: the answer's, or the team's work (reasoning_content).
                    if delta.get("content") or delta.get("reasoning_content"):
                        chunks += 1
                        if first is None:
                            first = now
                        elif last is not None:
                            gaps.append(now - last)
                        last = now
                    usage = obj.get("usage")
                    if usage:
                        tokens = usage.get("completion_tokens")
        end = time.perf_counter()
        if not done:
            raise StreamFailure("stream ended without [DONE]")
        if not answered:
            raise StreamFailure("stream without any content (no answer)")
        return first, gaps, end, chunks, tokens

    # -- non-streaming --------------------------------------------------------------------------------------
    def chat(self, label: str = "chat") -> None:
        model = random.choice(self.model_ids)
        body = self._body(model, [{"role": "user", "content": self.prompt}], False)
        t0 = time.perf_counter()
        with self.client.post(
            self.chat_path,
            data=json.dumps(body),
            headers=self.headers,
            catch_response=True,
            timeout=self.timeout,
            name=f"{label} [{model}]",
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                obj = resp.json()
                content = obj["choices"][0]["message"]["content"]
                tokens = obj.get("usage", {}).get("completion_tokens")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                resp.failure(f"not a chat completion: {exc}")
                return
            if obj.get("object") != "chat.completion" or not isinstance(content, str):
                resp.failure(f"not a chat completion: object={obj.get('object')!r}")
                return
            resp.success()
        total_s = time.perf_counter() - t0
        if tokens and total_s > 0:
            self._metric("tokens_per_s", model, tokens / total_s)

    def list_models(self) -> None:
        with self.client.get(self.models_path, headers=self.headers, catch_response=True, name="models") as r:
            if r.status_code != 200 or r.json().get("object") != "list":
                r.failure(f"HTTP {r.status_code}")


class StreamingUser(ChatClientMixin):
    """The main scenario: streamed chat completions, back to back with a short pause."""

    weight = 3
    wait_time = between(0.1, 0.5)

    @tag("stream")
    @task
    def streamed(self) -> None:
        self.stream_chat()


class NonStreamingUser(ChatClientMixin):
    weight = 1
    wait_time = between(0.1, 0.5)

    @tag("nonstream")
    @task
    def non_streamed(self) -> None:
        self.chat()


class MixedUser(ChatClientMixin):
    """A realistic profile: people read the answer before asking again."""

    weight = 1
    wait_time = between(1.0, 3.0)

    @tag("mixed", "stream")
    @task(6)
    def short_question(self) -> None:
        self.stream_chat()

    @tag("mixed", "stream")
    @task(2)
    def conversation(self) -> None:
        self.stream_chat(LONG_CONVERSATION, label="chat stream (conversation)")

    @tag("mixed", "nonstream")
    @task(2)
    def non_streamed(self) -> None:
        self.chat()

    @tag("mixed")
    @task(1)
    def models(self) -> None:
        self.list_models()


_SPIKE = os.environ.get("LOADTEST_SCENARIO", "") == "spike" or any(
    arg in ("SpikeUser", "spike") for arg in sys.argv
)

if _SPIKE:

    class SpikeUser(ChatClientMixin):
        """Streaming users for the spike shape."""

        weight = 1
        wait_time = between(0.1, 0.5)

        @tag("spike", "stream")
        @task
        def streamed(self) -> None:
            self.stream_chat(label="chat stream (spike)")

    class SpikeShape(LoadTestShape):
        """Baseline (a fifth of --users), a sudden spike to --users, back to baseline; over --run-time."""

        use_common_options = True

        def tick(self) -> tuple[int, float, list[type[Any]]] | None:
            opts = self.runner.environment.parsed_options if self.runner is not None else None
            peak = int(getattr(opts, "num_users", 0) or 50)
            run_time = float(getattr(opts, "run_time", 0) or 60)
            rate = float(getattr(opts, "spawn_rate", 0) or max(1.0, peak / 10))
            base = max(1, peak // 5)
            t = self.get_run_time()
            if t >= run_time:
                return None
            if t < run_time * 0.3:
                return base, rate, [SpikeUser]
            if t < run_time * 0.6:
                return peak, float(peak), [SpikeUser]  # all at once: the spike
            return base, float(peak), [SpikeUser]
