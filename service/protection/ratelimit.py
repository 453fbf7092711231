"""Rate limits with slowapi: per API key, or per client IP when auth is off, one budget for every
limited route (chat completions, responses, conversations).

`RATE_LIMIT` (e.g. `60/minute`; empty = off) is counted in `RATE_LIMIT_STORAGE_URI`: `memory://`
keeps one counter per worker process, `redis://...` one counter shared by every worker and pod.

slowapi and `limits` are synchronous, so the check runs in a worker thread: a storage round trip
never blocks the event loop. The limiter is built per app (not a module global) from the settings,
and used through slowapi's decorator on a per-app check function, called from a FastAPI dependency;
`SlowAPIASGIMiddleware` is not used (it breaks streaming responses).

When the storage fails (Redis down or slow) the request is let through (fail-open), the event is
logged and counted in `autogen_ratelimit_storage_errors_total`, and the storage is left alone for a
cool-down (0.25 s, doubling per failed period up to 1 s). After a cool-down one request probes the
storage while the others still pass unchecked; its success closes the breaker. So a dead or stalled
Redis costs at most one short socket timeout (and one retry) per cool-down per worker, never one per
request, and limits apply again at most about a second after Redis answers. Requests already in
flight when the storage fails do not lengthen the cool-down: it doubles once per failed period.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from fastapi import Request, Response
from limits import RateLimitItem
from limits.errors import StorageError
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.concurrency import run_in_threadpool

from service.app_state import StateKey, find, put
from service.config import Settings
from service.contract.errors import OpenAIError
from service.contract.protocols import CHAT_COMPLETIONS, protocol_of_path
from service.observability.metrics import METRICS, ServiceMetrics
from service.observability.redact import redact_uri
from service.protection.request_keys import API_KEY_ID, RATE_LIMIT_HEADERS

logger = logging.getLogger(__name__)

STORAGE_TIMEOUT_S = 0.25
COOL_DOWN_S = 0.25
MAX_COOL_DOWN_S = 1.0
# While the storage stays unreachable, a reminder is logged this often (with the requests let through).
OUTAGE_LOG_INTERVAL_S = 60.0
KEY_PREFIX = "autogen"
_STORAGE_FAILURES = (StorageError, RedisError, RedisClusterException, OSError)


def rate_limit_key(request: Request) -> str:
    """Who is limited: the API key's fingerprint (set by the auth dependency), else the client IP."""
    key_id = find(request, API_KEY_ID)
    if key_id:
        return str(key_id)
    host = request.client.host if request.client else "unknown"
    return f"ip:{host}"


def _storage_options(uri: str) -> dict[str, Any]:
    """Short socket timeouts and no backoff: a dead Redis must fail fast."""
    if uri.startswith("memory://"):
        return {}
    options: dict[str, Any] = {
        "wrap_exceptions": True,
        "socket_timeout": STORAGE_TIMEOUT_S,
        "socket_connect_timeout": STORAGE_TIMEOUT_S,
    }
    if uri.startswith(("redis://", "rediss://")):
        # One immediate retry: a pooled connection left stale by a Redis restart fails once, then a
        # fresh one is used; against a dead Redis it costs one more fast refusal, not a backoff.
        options["retry"] = Retry(NoBackoff(), 1)
        options["health_check_interval"] = 30
    return options


def chat_completions(request: Request, response: Response) -> None:
    """What slowapi's decorator wraps: it counts the hit first, raising `RateLimitExceeded` over the limit."""


@dataclass(frozen=True)
class RateLimitDecision:
    """The outcome of one check; `headers` are the `x-ratelimit-*` (and on refusal `Retry-After`) values."""

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)


_UNCHECKED = RateLimitDecision(allowed=True)  # the storage could not be asked: fail open


class ChatRateLimiter:
    """The rate limit of one app, with the fail-open circuit breaker around its storage.

    All breaker state is read and written on the event loop (only the storage call runs in a thread).
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = settings.rate_limit
        self.storage_uri = settings.rate_limit_storage_uri
        self._clock = clock
        self._failing = False
        self._open_until = 0.0
        self._cool_down_s = COOL_DOWN_S
        self._period = 0  # +1 per failed period: a failure seen in an older period changes nothing
        self._probing = False
        self._outage_started = 0.0
        self._outage_logged_at = 0.0
        self._unchecked = 0
        self.limiter: Limiter | None = None
        self._check_in_storage: Callable[..., None] | None = None
        try:
            self._build()
        except _STORAGE_FAILURES as exc:  # only a cluster URI connects here; start anyway, fail open
            self._trip(exc, self._period)

    def _build(self) -> None:
        limiter = Limiter(
            key_func=rate_limit_key,
            storage_uri=self.storage_uri,
            storage_options=cast(dict[str, str], _storage_options(self.storage_uri)),
            strategy="fixed-window",
            key_prefix=KEY_PREFIX,
            headers_enabled=False,  # the headers are built here, also for refused requests
            swallow_errors=False,  # storage errors come back to `check`, which fails open
        )
        # One budget per key (or IP) for every limited route, whatever its path: slowapi's default
        # scope is the request path (one budget per route, and per id in `/v1/responses/{id}`).
        self._check_in_storage = limiter.shared_limit(self.limit, scope="api")(chat_completions)
        self.limiter = limiter

    async def check(self, request: Request, metrics: ServiceMetrics | None) -> RateLimitDecision:
        """Count this request; fail open (and count that) when the storage cannot be reached."""
        probe = False
        if self._failing:
            if self._probing or self._clock() < self._open_until:
                return self._let_through(metrics)
            self._probing = probe = True  # this request asks the storage; the others do not wait
        period = self._period
        try:
            decision = await run_in_threadpool(self._check_sync, request)
        except _STORAGE_FAILURES as exc:
            self._trip(exc, period)
            return self._let_through(metrics)
        finally:
            if probe:
                self._probing = False
        self._recovered()
        return decision

    def _check_sync(self, request: Request) -> RateLimitDecision:
        if self._check_in_storage is None:
            self._build()
        assert self._check_in_storage is not None
        try:
            self._check_in_storage(request=request, response=Response())
        except RateLimitExceeded:
            return RateLimitDecision(allowed=False, headers=self._headers(request, refused=True))
        return RateLimitDecision(allowed=True, headers=self._headers(request, refused=False))

    def _headers(self, request: Request, *, refused: bool) -> dict[str, str]:
        current: tuple[RateLimitItem, list[str]] | None = getattr(request.state, "view_rate_limit", None)
        if current is None:
            return {}
        item, identifiers = current
        assert self.limiter is not None
        reset_at, remaining = self.limiter.limiter.get_window_stats(item, *identifiers)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        headers = {
            "x-ratelimit-limit": str(item.amount),
            "x-ratelimit-remaining": str(max(0, remaining)),
            "x-ratelimit-reset": str(retry_after),
        }
        if refused:
            headers["retry-after"] = str(retry_after)
        return headers

    def _let_through(self, metrics: ServiceMetrics | None) -> RateLimitDecision:
        self._unchecked += 1
        if metrics is not None:
            metrics.ratelimit_storage_errors.inc()
        now = self._clock()
        if self._failing and now - self._outage_logged_at >= OUTAGE_LOG_INTERVAL_S:
            self._outage_logged_at = now
            logger.warning(
                "rate-limit storage still unreachable: requests pass unchecked (fail-open)",
                extra={
                    "storage": redact_uri(self.storage_uri),
                    "outage_s": round(now - self._outage_started, 1),
                    "unchecked_requests": self._unchecked,
                },
            )
        return _UNCHECKED

    def _trip(self, exc: BaseException, period: int) -> None:
        """A storage call failed: back off, unless that call began before the current failed period."""
        if period != self._period:
            return  # in flight when the storage failed: this period is already counted
        now = self._clock()
        cool_down = self._cool_down_s
        self._period += 1
        self._open_until = now + cool_down
        self._cool_down_s = min(cool_down * 2, MAX_COOL_DOWN_S)
        if self._failing:
            return
        self._failing = True
        self._outage_started = self._outage_logged_at = now
        self._unchecked = 0
        cause = exc.storage_error if isinstance(exc, StorageError) else exc
        logger.warning(
            "rate-limit storage unreachable: requests pass unchecked (fail-open)",
            extra={
                "reason": type(cause).__name__,
                "storage": redact_uri(self.storage_uri),
                "retry_in_s": cool_down,
            },
        )

    def _recovered(self) -> None:
        if not self._failing:
            return
        self._failing = False
        self._cool_down_s = COOL_DOWN_S
        self._period += 1
        logger.info(
            "rate-limit storage reachable again: limits apply",
            extra={
                "outage_s": round(self._clock() - self._outage_started, 1),
                "unchecked_requests": self._unchecked,
            },
        )


def _model_and_stream(body: object) -> tuple[str, bool]:
    if isinstance(body, dict):
        model = body.get("model")
        return (model if isinstance(model, str) else "", body.get("stream") is True)
    return "", False


async def enforce_rate_limit(request: Request) -> None:
    """Dependency: 429 with `Retry-After` and `x-ratelimit-*` over the limit; headers kept for the answer."""
    limiter = find(request.app, RATE_LIMITER)
    if limiter is None:
        return
    metrics = find(request.app, METRICS)
    decision = await limiter.check(request, metrics)
    if decision.allowed:
        put(request, RATE_LIMIT_HEADERS, decision.headers)
        return
    if metrics is not None:
        # The body is already parsed (FastAPI reads it before dependencies run; `json()` is cached).
        try:
            body = await request.json()
        except ValueError:
            body = None
        model, stream = _model_and_stream(body)
        protocol = protocol_of_path(request.url.path) or CHAT_COMPLETIONS
        metrics.request(model, stream, protocol.name).finish("rate_limited")
    raise OpenAIError(
        429,
        f"Rate limit reached ({limiter.limit}). Retry after {decision.headers.get('retry-after', '1')} s.",
        code="rate_limit_exceeded",
        headers=decision.headers,
    )


def rate_limit_headers(request: Request) -> dict[str, str]:
    """The `x-ratelimit-*` headers of an allowed request (empty when limits are off or unchecked)."""
    headers: dict[str, str] | None = find(request, RATE_LIMIT_HEADERS)
    return headers or {}


RATE_LIMITER: StateKey[ChatRateLimiter] = StateKey("rate_limiter", ChatRateLimiter)
