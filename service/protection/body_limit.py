"""Request body cap (`MAX_BODY_BYTES`): 413 in the OpenAI error shape, counted as `body_too_large`.

A pure ASGI middleware (no `BaseHTTPMiddleware`, which would buffer and break streaming). A declared
`Content-Length` over the cap is refused before a byte of the body is read; a chunked body is
counted as it arrives and refused as soon as it passes the cap.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.app_state import find
from service.contract.errors import OpenAIError
from service.observability.metrics import METRICS
from service.protection.responses import error_response

logger = logging.getLogger(__name__)


class BodyTooLarge(OpenAIError, HTTPException):
    """Raised from `receive` when a streamed body passes the cap. It is also an `HTTPException`:
    FastAPI passes those through when reading the body fails (anything else becomes a 400)."""

    def __init__(self, limit: int) -> None:
        OpenAIError.__init__(
            self,
            413,
            f"Request body too large: at most {limit} bytes are accepted.",
            code="request_too_large",
        )
        self.detail = self.message


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _count_rejection(scope: Scope) -> None:
    app = scope.get("app")
    metrics = find(app, METRICS)
    if metrics is not None:
        metrics.rejected.labels("body_too_large").inc()


class BodyLimitMiddleware:
    """Refuses request bodies longer than `max_bytes` with a 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            _count_rejection(scope)
            await error_response(BodyTooLarge(self.max_bytes))(scope, receive, send)
            return

        received = 0
        refused = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if not refused:
                        refused = True
                        _count_rejection(scope)
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            # Normally the app's error handler renders it; this covers a body read outside a route.
            if response_started:
                raise
            await error_response(exc)(scope, receive, send)
