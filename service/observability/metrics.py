"""Prometheus metrics of the service (names are a contract: dashboards, alerts and load tests use them).

Metrics are created by the app factory, not at import time, in a registry of their own. Under
gunicorn, `PROMETHEUS_MULTIPROC_DIR` makes every worker write its values to shared files and
`/metrics` aggregates them (see `render_latest`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from service.app_state import StateKey
from service.contract.protocols import API_NAMES, CHAT_COMPLETIONS
from service.observability import multiprocess
from service.observability.exposition import MetricsPage

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "client_error", "server_error", "rate_limited", "cancelled", "timeout"]
# The API a request came through: the `api` label of the request metrics, one of the registered
# protocols' names (`service.contract.protocols.API_NAMES`).
Api = str
CoreFunction = Literal[
    "handle_response", "serve_autogen", "generate_streaming_response", "create_non_streaming_response"
]
# `autogen_errors_total{function="unhandled"}`: a 500 raised outside the four core functions.
ERROR_FUNCTIONS = (*get_args(CoreFunction), "unhandled")
# `autogen_rejected_total{reason}`: requests (or connections) refused before any work.
REJECT_REASONS = (
    "overload",
    "body_too_large",
    "unauthorized",
    "auth_failures",
    "draining",
    "headers_too_large",
    "header_timeout",
    "body_timeout",
    "connection_limit",
)
TOKEN_KINDS = ("prompt", "completion")
UNKNOWN_MODEL = "unknown"
UNKNOWN_AGENT = "other"
# A failure to write the metric files is logged at most this often per worker (always counted).
WRITE_ERROR_LOG_INTERVAL_S = 600.0

# LLM calls are slow: the buckets reach well past a minute.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
STATE_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STATE_BYTES_BUCKETS = tuple(float(1024 * 4**power) for power in range(8))  # 1 KiB .. 16 MiB
StateOperation = Literal["load", "save"]


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ServiceMetrics:
    """All metric families of the service, bound to one registry.

    Every label set known at start (each served model, agent, outcome, core function, rejection
    reason) is created at 0, so each family is exposed from the first scrape and `rate()` sees the
    first event. `known_agents` is either each model's agents (`{model: [agent, ...]}`) or one list
    for every model.
    """

    def __init__(
        self,
        known_models: Iterable[str] = (),
        known_agents: Iterable[str] | Mapping[str, Iterable[str]] = (),
        page_cache_s: float = 1.0,
    ) -> None:
        # Before any metric exists: a full metrics filesystem must not kill the worker.
        multiprocess.install(self._write_error)
        self._write_errors_logged_at: float | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.page = MetricsPage(self.render_latest, page_cache_s)
        self.known_models = frozenset(known_models)
        if isinstance(known_agents, Mapping):
            agents_by_model = {model: frozenset(agents) for model, agents in known_agents.items()}
            self.known_agents: frozenset[str] = frozenset().union(*agents_by_model.values())
        else:
            self.known_agents = frozenset(known_agents)
            agents_by_model = dict.fromkeys(self.known_models, self.known_agents)
        registry = self.registry
        self.requests = Counter(
            "autogen_requests_total",
            "Team-run requests (chat completions, responses) by API, model, streaming and outcome.",
            ["api", "model", "stream", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "autogen_errors_total",
            "Server errors (HTTP 500 paths) by the core function where they happened.",
            ["function"],
            registry=registry,
        )
        self.duration = Histogram(
            "autogen_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ["api", "model", "stream"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "autogen_time_to_first_token_seconds",
            "Time from request to the first content chunk of a stream.",
            ["api", "model"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.stream_chunks = Counter(
            "autogen_stream_chunks_total", "SSE chunks sent to clients.", ["model"], registry=registry
        )
        self.tokens = Counter(
            "autogen_tokens_total",
            "Tokens by kind (prompt, completion).",
            ["model", "kind"],
            registry=registry,
        )
        self.agent_messages = Counter(
            "autogen_agent_messages_total",
            "Messages produced by each agent.",
            ["model", "agent"],
            registry=registry,
        )
        self.model_calls = Counter(
            "autogen_model_calls_total",
            "Calls made by the agents to their model clients.",
            ["model"],
            registry=registry,
        )
        self.active_streams = Gauge(
            "autogen_active_streams",
            "Open SSE streams.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.active_workflows = Gauge(
            "autogen_active_workflows",
            "Team runs in progress.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        # Summed over live workers: an instance's capacity, read by alerts and dashboards instead of
        # a number copied from the settings.
        self.workflow_capacity = Gauge(
            "autogen_workflow_capacity",
            "Team runs the workers may hold at once (MAX_CONCURRENT_WORKFLOWS per worker, summed).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ratelimit_storage_errors = Counter(
            "autogen_ratelimit_storage_errors_total",
            "Requests let through because the rate-limit storage was unreachable (fail-open).",
            registry=registry,
        )
        self.rejected = Counter(
            "autogen_rejected_total",
            "Requests (or connections) refused before any work, by reason.",
            ["reason"],
            registry=registry,
        )
        self.open_connections = Gauge(
            "autogen_open_connections",
            "Open HTTP connections.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.metrics_write_errors = Counter(
            "autogen_metrics_write_errors_total",
            "Metric values that could not be written to PROMETHEUS_MULTIPROC_DIR (kept in memory instead).",
            registry=registry,
        )
        self.state_seconds = Histogram(
            "autogen_state_operation_seconds",
            "Responses API: time to load a team's saved state before a turn, or to save it after.",
            ["operation"],
            buckets=STATE_SECONDS_BUCKETS,
            registry=registry,
        )
        self.state_bytes = Histogram(
            "autogen_state_bytes",
            "Responses API: size of the team states saved after a turn (their JSON).",
            buckets=STATE_BYTES_BUCKETS,
            registry=registry,
        )
        self.state_errors = Counter(
            "autogen_state_store_errors_total",
            "State store operations that failed (unreachable or failing store: the request got 503).",
            registry=registry,
        )
        self._create_known_label_sets(agents_by_model)

    def _create_known_label_sets(self, agents_by_model: Mapping[str, Iterable[str]]) -> None:
        for model in (*sorted(self.known_models), UNKNOWN_MODEL):
            for api in API_NAMES:
                for stream in ("true", "false"):
                    for outcome in get_args(Outcome):
                        self.requests.labels(api, model, stream, outcome)
                    self.duration.labels(api, model, stream)
                self.ttft.labels(api, model)
            self.stream_chunks.labels(model)
            self.model_calls.labels(model)
            for kind in TOKEN_KINDS:
                self.tokens.labels(model, kind)
        for model, agents in agents_by_model.items():
            for agent in sorted(agents):
                self.agent_messages.labels(model, agent)
        for function in ERROR_FUNCTIONS:
            self.errors.labels(function)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for operation in get_args(StateOperation):
            self.state_seconds.labels(operation)

    def _write_error(self, exc: OSError) -> None:
        counter = getattr(self, "metrics_write_errors", None)
        if counter is not None:
            counter.inc()
        now = time.monotonic()
        logged_at = self._write_errors_logged_at
        if logged_at is not None and now - logged_at < WRITE_ERROR_LOG_INTERVAL_S:
            return
        self._write_errors_logged_at = now
        logger.error(
            "metrics cannot be written to PROMETHEUS_MULTIPROC_DIR: this worker keeps serving and holds "
            "the values it cannot write in memory (not exported) until the directory has room again",
            extra={
                "reason": os.strerror(exc.errno) if exc.errno else type(exc).__name__,
                "directory": multiprocess_dir(),
                "retry_interval_s": multiprocess.RETRY_INTERVAL_S,
            },
        )

    def model_label(self, model: str) -> str:
        """The model id if served, else one fixed value: label cardinality stays bounded."""
        return model if model in self.known_models else UNKNOWN_MODEL

    def agent_label(self, agent: str) -> str:
        return agent if agent in self.known_agents else UNKNOWN_AGENT

    def request(self, model: str, stream: bool, api: Api = CHAT_COMPLETIONS.name) -> RequestObserver:
        """The observer of one request of `api` (a registered protocol's name)."""
        return RequestObserver(self, self.model_label(model), "true" if stream else "false", api)

    def render_latest(self) -> bytes:
        """The exposition text: aggregated across workers in multiprocess mode (blocking file I/O
        and parsing: `/metrics` serves it through `page`)."""
        directory = multiprocess_dir()
        if directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


@dataclass
class RequestObserver:
    """Records one request's metrics; `finish` is idempotent so every exit path may call it."""

    metrics: ServiceMetrics
    model: str
    stream: str
    api: Api = CHAT_COMPLETIONS.name
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    outcome: Outcome | None = None
    _chunk_counter: Counter | None = field(default=None, repr=False)

    def first_content(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.metrics.ttft.labels(self.api, self.model).observe(self.first_token_at - self.started)

    def chunks(self, count: int = 1) -> None:
        # Called per write of a stream: the labelled child is looked up once per request.
        if self._chunk_counter is None:
            self._chunk_counter = self.metrics.stream_chunks.labels(self.model)
        self._chunk_counter.inc(count)

    def model_call(self, count: int = 1) -> None:
        if count:
            self.metrics.model_calls.labels(self.model).inc(count)

    def agent_message(self, agent: str) -> None:
        self.metrics.agent_messages.labels(self.model, self.metrics.agent_label(agent)).inc()

    def tokens(self, prompt: int, completion: int) -> None:
        if prompt:
            self.metrics.tokens.labels(self.model, "prompt").inc(prompt)
        if completion:
            self.metrics.tokens.labels(self.model, "completion").inc(completion)

    def error(self, function: CoreFunction) -> None:
        self.metrics.errors.labels(function).inc()

    def finish(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.metrics.requests.labels(self.api, self.model, self.stream, outcome).inc()
        self.metrics.duration.labels(self.api, self.model, self.stream).observe(
            time.perf_counter() - self.started
        )


METRICS: StateKey[ServiceMetrics] = StateKey("metrics", ServiceMetrics)
