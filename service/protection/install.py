"""Wiring of the protections into the app, and the start-up report of what is on.

The report is logged once: by the gunicorn master before it starts its workers (which then skip it),
or by the app itself when it runs without that master (uvicorn alone, tests).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from service.app_state import get, put
from service.config import Settings
from service.lifecycle import SHUTDOWN_MARGIN_S
from service.observability.redact import redact_uri
from service.protection.auth import API_KEYS, AUTH_FAILURES, ApiKeys, FailedAuthLimiter
from service.protection.body_limit import BodyLimitMiddleware
from service.protection.connections import connection_cap, fd_limit
from service.protection.headers import CORSMiddleware, SecurityHeadersMiddleware, cors_options
from service.protection.ratelimit import RATE_LIMITER, ChatRateLimiter

logger = logging.getLogger("service.protection")

# A stream may outlive WORKFLOW_TIMEOUT_S by the producer's final-put margin (autogen_server).
_STREAM_MARGIN_S = 5.0

# Set in the gunicorn master once it has logged the report; its workers inherit it when they fork.
_reported_by_master = False


def install_protection(app: FastAPI, settings: Settings) -> None:
    """API keys, failed-auth and rate limiters kept on the app; body cap, CORS and security headers as
    ASGI middleware."""
    put(app, API_KEYS, ApiKeys.from_settings(settings))
    failures = FailedAuthLimiter.from_settings(settings)
    if failures is not None:
        put(app, AUTH_FAILURES, failures)
    if settings.rate_limit:
        put(app, RATE_LIMITER, ChatRateLimiter(settings))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, **cors_options(settings))
    app.add_middleware(SecurityHeadersMiddleware)


def log_protection(app: FastAPI, settings: Settings) -> None:
    """The start-up report, unless the gunicorn master that started this worker already logged it."""
    if not _reported_by_master:
        report_protection(settings, get(app, API_KEYS))


def report_from_master(settings: Settings) -> None:
    """The start-up report, from the gunicorn master (before it forks its workers)."""
    global _reported_by_master
    try:
        api_keys = ApiKeys.from_settings(settings)
    except RuntimeError as exc:  # an unreadable key file: the workers will refuse to start too
        logger.error(str(exc))
        return
    report_protection(settings, api_keys)
    _reported_by_master = True


def report_protection(settings: Settings, api_keys: ApiKeys) -> None:
    """One start-up line per protection; a loud warning when the service accepts anyone."""
    if api_keys.enabled:
        logger.info("API key authentication on", extra={"keys": api_keys.fingerprints})
    else:
        logger.warning(
            "API KEY AUTHENTICATION IS OFF: API_KEYS and API_KEYS_FILE are empty, every client is "
            "accepted. Set API_KEYS (or API_KEYS_FILE) before exposing this service."
        )
    max_connections = connection_cap(settings.max_connections)
    logger.info(
        "protection settings",
        extra={
            "rate_limit": settings.rate_limit or "off",
            "rate_limit_storage": redact_uri(settings.rate_limit_storage_uri),
            "auth_failure_limit": settings.auth_failure_limit or "off",
            "max_concurrent_workflows": settings.max_concurrent_workflows,
            "max_body_bytes": settings.max_body_bytes,
            "max_header_bytes": settings.max_header_bytes,
            "header_timeout_s": settings.header_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
            "max_connections": max_connections,
            "fd_limit": fd_limit(),
            "workflow_timeout_s": settings.workflow_timeout_s,
            "graceful_timeout_s": settings.graceful_timeout_s,
            "drain_delay_s": settings.drain_delay_s,
            "cors_origins": settings.cors_origins or "off",
        },
    )
    if max_connections < settings.max_connections:
        logger.warning(
            "MAX_CONNECTIONS lowered to fit the open-files limit (raise the hard limit, `ulimit -Hn`)",
            extra={"max_connections": max_connections, "configured": settings.max_connections},
        )
    per_process = settings.rate_limit_storage_uri.startswith("memory://")
    if settings.rate_limit and per_process and settings.workers > 1:
        logger.warning(
            "RATE_LIMIT with memory:// storage counts per worker process: set RATE_LIMIT_STORAGE_URI "
            "to a redis:// URI to share the limit between workers and pods"
        )
    needed = settings.workflow_timeout_s + _STREAM_MARGIN_S + settings.drain_delay_s + SHUTDOWN_MARGIN_S
    if settings.graceful_timeout_s < needed:
        logger.warning(
            "GRACEFUL_TIMEOUT_S is shorter than WORKFLOW_TIMEOUT_S + drain: a stream that starts just "
            "before a shutdown may be cut",
            extra={"graceful_timeout_s": settings.graceful_timeout_s, "needed_s": needed},
        )
