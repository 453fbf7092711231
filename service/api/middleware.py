"""Small pure-ASGI middlewares (no BaseHTTPMiddleware: it would buffer and break streaming)."""

from __future__ import annotations

import re
import uuid

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observability.logging import request_id_var

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestIdMiddleware:
    """Accepts a safe `X-Request-ID` (or makes one), exposes it to logs and returns it, with the
    trace id of the request's server span as `X-Trace-Id` when tracing is on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)

        extra_headers = [(b"x-request-id", request_id.encode())]
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            extra_headers.append((b"x-trace-id", format(span_context.trace_id, "032x").encode()))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra_headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
