"""API keys: `Authorization: Bearer <key>` checked against `API_KEYS` and `API_KEYS_FILE`.

Keys are held only as SHA-256 digests. A presented key is hashed and compared with every known
digest with `hmac.compare_digest` (no early exit), so the time taken says nothing about how much
of a key was right. Logs name a key by its fingerprint (`key-` + 12 hex digits of its digest).

`API_KEYS_FILE` (a mounted Kubernetes Secret: one key per line) is re-read when it changes, at most
every `KEY_FILE_CHECK_INTERVAL_S`: keys rotate without a restart (add the new key, move the
clients, remove the old key). With neither variable set, authentication is off.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.config import Settings, parse_api_keys_file
from service.contract.errors import OpenAIError

logger = logging.getLogger(__name__)

KEY_FILE_CHECK_INTERVAL_S = 10.0

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


def _unauthorized(request: Request, message: str) -> OpenAIError:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejected.labels("unauthorized").inc()
    return OpenAIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str | None:
    """Dependency: the caller's key fingerprint (None when auth is off); 401 without a valid key."""
    keys: ApiKeys = request.app.state.api_keys
    if not keys.enabled:
        return None
    if credentials is None:
        raise _unauthorized(request, "Missing API key: send the header 'Authorization: Bearer <key>'.")
    key_id = keys.verify(credentials.credentials)
    if key_id is None:
        logger.info("request with an invalid API key refused", extra={"path": request.url.path})
        raise _unauthorized(request, "Invalid API key.")
    request.state.api_key_id = key_id
    return key_id
