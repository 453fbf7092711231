"""Graceful drain, the app side: once draining starts, new chat requests are refused at once.

`Lifecycle.start_draining()` is called by the gunicorn worker on SIGTERM (see `worker.py`), so
`/readyz` answers 503 and this dependency answers new chat requests with 503, `Retry-After` and
`Connection: close` (the client reconnects, through the load balancer, to another instance). Open
streams are not affected: they run to `[DONE]`.
"""

from __future__ import annotations

from fastapi import Request

from service.app_state import find, get
from service.contract.errors import OpenAIError
from service.lifecycle import LIFECYCLE
from service.observability.metrics import METRICS


def shutting_down() -> OpenAIError:
    return OpenAIError(
        503,
        "The server is shutting down. Retry the request.",
        code="shutting_down",
        headers={"Retry-After": "1", "Connection": "close"},
    )


async def refuse_while_draining(request: Request) -> None:
    """Guard: 503 for new work once the worker drains (counted as `rejected{reason="draining"}`)."""
    lifecycle = get(request.app, LIFECYCLE)
    if lifecycle.draining:
        metrics = find(request.app, METRICS)
        if metrics is not None:
            metrics.rejected.labels("draining").inc()
        raise shutting_down()
