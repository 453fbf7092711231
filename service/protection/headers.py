"""Security headers on every response, and CORS only when `CORS_ORIGINS` names origins.

A pure ASGI middleware: it adds headers to `http.response.start` and never touches the body, so
streams pass through untouched. Headers the app set itself (e.g. a stream's `Cache-Control`) win.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
# The API serves JSON and SSE only: nothing may load, frame or run.
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
# The pages load only what the service itself serves (no CDN, no inline script) and call the API of
# their own origin. Swagger UI draws its icons from data: URIs; ReDoc also injects its styles
# (styled-components) and builds its search index in a blob: worker.
_PAGE_BASE = b"default-src 'none'; script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'"
_NO_FRAMING = b"; frame-ancestors 'none'"
PLAYGROUND_CSP = (
    b"content-security-policy",
    _PAGE_BASE + b"; style-src 'self'; img-src 'self'" + _NO_FRAMING,
)
SWAGGER_CSP = (
    b"content-security-policy",
    _PAGE_BASE + b"; style-src 'self'; img-src 'self' data:" + _NO_FRAMING,
)
REDOC_CSP = (
    b"content-security-policy",
    _PAGE_BASE + b"; style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src blob:" + _NO_FRAMING,
)
_PAGE_CSP = {"/": PLAYGROUND_CSP, "/playground": PLAYGROUND_CSP, "/docs": SWAGGER_CSP, "/redoc": REDOC_CSP}


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = (*SECURITY_HEADERS, _PAGE_CSP.get(scope.get("path", ""), API_CSP))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in extra if name not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cors_options(settings: Settings) -> dict[str, Any]:
    """`CORSMiddleware` options for `CORS_ORIGINS` (bearer keys, no cookies: no credentials)."""
    return {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ["Authorization", "Content-Type", "X-Request-ID"],
        "expose_headers": [
            "X-Request-ID",
            "X-Trace-Id",
            "Retry-After",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ],
        "allow_credentials": False,
        "max_age": 600,
    }


__all__ = ["CORSMiddleware", "SecurityHeadersMiddleware", "cors_options"]
