"""API keys: `Authorization: Bearer <key>` checked against `API_KEYS` and `API_KEYS_FILE`.

Keys are held only as SHA-256 digests. A presented key is hashed and compared with every known
digest with `hmac.compare_digest` (no early exit), so the time taken says nothing about how much
of a key was right. Logs name a key by its fingerprint (`key-` + 12 hex digits of its digest).

`API_KEYS_FILE` (a mounted Kubernetes Secret: one key per line) is re-read when it changes, at most
every `KEY_FILE_CHECK_INTERVAL_S`: keys rotate without a restart (add the new key, move the
clients, remove the old key). With neither variable set, authentication is off.

Wrong keys are limited per client (`AUTH_FAILURE_LIMIT`, e.g. `10/minute`, per worker): past the
limit, the client's requests get 429 until its window ends, whatever key they carry (a valid key
passing would tell a guesser which guess was right), and one line is logged per client and window.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse as parse_limit

from service.app_state import StateKey, find, get, put
from service.config import SETTINGS, Settings, parse_api_keys_file
from service.contract.errors import OpenAIError
from service.observability.metrics import METRICS
from service.protection.request_keys import API_KEY_ID

logger = logging.getLogger(__name__)

KEY_FILE_CHECK_INTERVAL_S = 10.0
# Clients whose failed authentications are remembered per worker; the least recently seen is
# forgotten first, so memory stays bounded whatever the number of addresses.
MAX_TRACKED_CLIENTS = 10_000

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="An API key from `API_KEYS` / `API_KEYS_FILE` (required when either is set).",
)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def fingerprint(key: str) -> str:
    """A stable, non-reversible name for a key, safe to log and to use as a rate-limit key."""
    return "key-" + _digest(key).hex()[:12]


def _fingerprint_of(digest: bytes) -> str:
    return "key-" + digest.hex()[:12]


class ApiKeys:
    """The accepted keys (as digests) and the constant-time check of a presented key."""

    def __init__(
        self,
        keys: Iterable[str] = (),
        key_file: Path | None = None,
        *,
        check_interval_s: float = KEY_FILE_CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = tuple(dict.fromkeys(_digest(key) for key in keys if key))
        self._file = key_file
        self._file_digests: tuple[bytes, ...] = ()
        self._file_stamp: tuple[int, int, int] | None = None
        self._check_interval_s = check_interval_s
        self._clock = clock
        self._next_check = 0.0
        if key_file is not None:
            self._load_file(initial=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        return cls((key.get_secret_value() for key in settings.api_keys), settings.api_keys_file)

    @property
    def enabled(self) -> bool:
        """On when any key is configured, or when a key file is named (even an empty one: fail closed)."""
        return bool(self._static) or self._file is not None

    @property
    def fingerprints(self) -> list[str]:
        return [_fingerprint_of(digest) for digest in self._digests()]

    def _digests(self) -> tuple[bytes, ...]:
        return self._static + self._file_digests

    def verify(self, presented: str) -> str | None:
        """The fingerprint of the matching key, or None. Takes the same time whichever key matches."""
        self._maybe_reload()
        candidate = _digest(presented)
        match: bytes | None = None
        for known in self._digests():
            if hmac.compare_digest(known, candidate):
                match = known
        return _fingerprint_of(match) if match is not None else None

    def _maybe_reload(self) -> None:
        if self._file is None:
            return
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self._check_interval_s
        self._load_file(initial=False)

    def _load_file(self, *, initial: bool) -> None:
        assert self._file is not None
        try:
            stat = os.stat(self._file)
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if stamp == self._file_stamp:
                return
            keys = parse_api_keys_file(self._file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            if initial:
                # Refuse to start rather than run with fewer keys than intended.
                raise RuntimeError(
                    f"API_KEYS_FILE {self._file} cannot be read: {type(exc).__name__}"
                ) from None
            logger.warning(
                "API_KEYS_FILE cannot be read; keeping the previous keys",
                extra={"reason": type(exc).__name__},
            )
            return
        digests = tuple(dict.fromkeys(_digest(key) for key in keys))
        if not initial and digests != self._file_digests:
            logger.info(
                "API keys reloaded from API_KEYS_FILE",
                extra={"keys": [_fingerprint_of(digest) for digest in digests]},
            )
        self._file_digests = digests
        self._file_stamp = stamp
        if not self._digests():
            logger.error("API_KEYS_FILE holds no key: every request is refused until one is added")


class FailedAuthLimiter:
    """Failed authentications per client in fixed windows, in bounded memory (one worker's count).

    A client is its IP address; an IPv6 client is its /64 network (what one subscriber gets).
    """

    def __init__(
        self,
        amount: int,
        window_s: float,
        *,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.amount = amount
        self.window_s = window_s
        self._max_clients = max_clients
        self._clock = clock
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()  # client -> (start, failures)

    @classmethod
    def from_settings(cls, settings: Settings) -> FailedAuthLimiter | None:
        if not settings.auth_failure_limit:
            return None
        item = parse_limit(settings.auth_failure_limit)
        return cls(item.amount, float(item.get_expiry()))

    @staticmethod
    def client_of(host: str) -> str:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(address)

    def _current(self, client: str) -> tuple[float, int]:
        now = self._clock()
        start, failures = self._windows.get(client, (now, 0))
        if now - start >= self.window_s:
            start, failures = now, 0
        return start, failures

    def retry_after(self, client: str) -> float | None:
        """Seconds until the client may try again, when it is over the limit; else None."""
        if client not in self._windows:
            return None
        start, failures = self._current(client)
        if failures < self.amount:
            return None
        return start + self.window_s - self._clock()

    def failed(self, client: str) -> int:
        """Count a failed authentication; the client's failures in its current window."""
        start, failures = self._current(client)
        self._windows[client] = (start, failures + 1)
        self._windows.move_to_end(client)
        if len(self._windows) > self._max_clients:
            self._windows.popitem(last=False)
        return failures + 1


def _unauthorized(request: Request, message: str) -> OpenAIError:
    _count_rejection(request, "unauthorized")
    return OpenAIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def _count_rejection(request: Request, reason: str) -> None:
    metrics = find(request.app, METRICS)
    if metrics is not None:
        metrics.rejected.labels(reason).inc()


def _too_many_failures(request: Request, retry_after: float) -> OpenAIError:
    _count_rejection(request, "auth_failures")
    seconds = max(1, math.ceil(retry_after))
    return OpenAIError(
        429,
        f"Too many requests with an invalid API key from this client. Retry after {seconds} s.",
        code="too_many_auth_failures",
        headers={"Retry-After": str(seconds)},
    )


def _wrong_key(request: Request, limiter: FailedAuthLimiter | None, client: str) -> OpenAIError:
    """Count and log a wrong key: the first of a client's window, and the one that reaches the limit."""
    failures = limiter.failed(client) if limiter is not None else 1
    if failures == 1:
        logger.info(
            "request with an invalid API key refused",
            extra={"path": request.url.path, "client": client},
        )
    if limiter is not None and failures == limiter.amount:
        logger.warning(
            "too many invalid API keys from one client: its requests get 429 until the window ends",
            extra={"client": client, "failures": failures, "window_s": limiter.window_s},
        )
    return _unauthorized(request, "Invalid API key.")


def _within_failure_limit(request: Request) -> tuple[FailedAuthLimiter | None, str]:
    """The failed-credentials limiter and the caller's client key; 429 for a client past
    `AUTH_FAILURE_LIMIT` wrong credentials in its window (API keys and the metrics token alike)."""
    limiter = find(request.app, AUTH_FAILURES)
    client = FailedAuthLimiter.client_of(request.client.host if request.client else "unknown")
    if limiter is not None:
        retry_after = limiter.retry_after(client)
        if retry_after is not None:
            raise _too_many_failures(request, retry_after)
    return limiter, client


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str | None:
    """Dependency: the caller's key fingerprint (None when auth is off); 401 without a valid key,
    429 for a client past `AUTH_FAILURE_LIMIT` wrong keys in its window."""
    keys = get(request.app, API_KEYS)
    if not keys.enabled:
        return None
    limiter, client = _within_failure_limit(request)
    if credentials is None:
        raise _unauthorized(request, "Missing API key: send the header 'Authorization: Bearer <key>'.")
    key_id = keys.verify(credentials.credentials)
    if key_id is None:
        raise _wrong_key(request, limiter, client)
    put(request, API_KEY_ID, key_id)
    return key_id


async def require_metrics_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Dependency of `/metrics`: nothing when `METRICS_TOKEN` is unset; otherwise 401 without
    `Authorization: Bearer <METRICS_TOKEN>` (compared in constant time), and 429 for a client past
    `AUTH_FAILURE_LIMIT` wrong credentials, as for API keys."""
    token = get(request.app, SETTINGS).metrics_token
    if token is None:
        return
    limiter, client = _within_failure_limit(request)
    if credentials is None:
        raise _unauthorized(
            request, "Missing metrics token: send the header 'Authorization: Bearer <token>'."
        )
    if not hmac.compare_digest(_digest(credentials.credentials), _digest(token.get_secret_value())):
        raise _wrong_key(request, limiter, client)


API_KEYS: StateKey[ApiKeys] = StateKey("api_keys", ApiKeys)
AUTH_FAILURES: StateKey[FailedAuthLimiter] = StateKey("auth_failures", FailedAuthLimiter)
