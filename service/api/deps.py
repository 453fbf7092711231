"""FastAPI dependencies and what routes share: the guards, the typed state, the errors' schema, and
the epilogue of a team run (rate-limit headers, 499 for a client that left). Route modules import
from here, never from each other.

Dependencies are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop
per request (and a pool of 40 threads shared by every request of the worker).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from service.app_state import find, get
from service.contract.errors import ErrorResponse, OpenAIError
from service.lifecycle import LIFECYCLE, Lifecycle
from service.observability.metrics import METRICS, ServiceMetrics
from service.protection.auth import bearer_scheme, require_api_key
from service.protection.drain import refuse_while_draining
from service.protection.ratelimit import enforce_rate_limit, rate_limit_headers
from service.protection.request_keys import API_KEY_ID
from service.serving.context import SERVING, ServingContext
from service.serving.errors import ClientGone
from service.state import ANONYMOUS_OWNER, STATE_STORE, StateStoreHandle
from service.workflows.registry import WorkflowRegistry


# ------------------------------------------------------------------------------------ app state
async def get_context(request: Request) -> ServingContext:
    return get(request.app, SERVING)


async def get_registry(request: Request) -> WorkflowRegistry:
    return get(request.app, SERVING).registry


async def get_metrics(request: Request) -> ServiceMetrics:
    return get(request.app, METRICS)


async def get_lifecycle(request: Request) -> Lifecycle:
    return get(request.app, LIFECYCLE)


async def get_states(request: Request) -> StateStoreHandle:
    return get(request.app, STATE_STORE)


async def get_owner(request: Request) -> str:
    """Who owns what this request stores or reads: the API key's fingerprint (set by the guards),
    or one shared owner when authentication is off."""
    return find(request, API_KEY_ID) or ANONYMOUS_OWNER


ContextDep = Annotated[ServingContext, Depends(get_context)]
RegistryDep = Annotated[WorkflowRegistry, Depends(get_registry)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
StatesDep = Annotated[StateStoreHandle, Depends(get_states)]
OwnerDep = Annotated[str, Depends(get_owner)]
IdPath = Annotated[str, Path(max_length=128)]
After = Annotated[str | None, Query(max_length=128, description="An item id: the page after it.")]
Limit = Annotated[int, Query(ge=1, le=100, description="Items per page (1-100).")]
Order = Annotated[Literal["asc", "desc"], Query(description="`desc` (default): newest first.")]


# --------------------------------------------------------------------------------------- guards
async def require_json(request: Request) -> None:
    """Dependency: the body must be declared as JSON (415 otherwise, not a confusing 400)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise OpenAIError(
            415,
            "The request body must be JSON (Content-Type: application/json).",
            code="unsupported_media_type",
        )


async def admit_chat_request(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Dependency: the guards of a request with a JSON body, in order: drain (503), API key (401),
    JSON content type (415), rate limit (429).

    One dependency that calls the guards in turn rather than four: FastAPI resolves every dependency
    of a route on every request, and this is the hot path.
    """
    await refuse_while_draining(request)
    await require_api_key(request, credentials)
    await require_json(request)
    await enforce_rate_limit(request)


async def admit_read_request(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Dependency: the guards of a request without a body: drain (503), API key (401), rate limit (429)."""
    await refuse_while_draining(request)
    await require_api_key(request, credentials)
    await enforce_rate_limit(request)


# ------------------------------------------------------------------------------- errors' schema
def error_responses(descriptions: Mapping[int | str, str]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route's errors, all in the OpenAI error shape."""
    return {status: {"model": ErrorResponse, "description": text} for status, text in descriptions.items()}


_STORED_DESCRIPTIONS: dict[int | str, str] = {
    400: "Invalid request",
    401: "Missing or invalid API key",
    404: "Unknown model, or no such object for this API key (missing, deleted, expired or another key's)",
    409: "Another turn of the conversation is running, or its saved state no longer fits the team",
    413: "Request body, or the team's state after the turn (STATE_MAX_BYTES), too large",
    415: "Request body not declared as JSON",
    429: "Rate limited (`Retry-After`, `x-ratelimit-*` headers)",
    500: "Server error",
    502: "Upstream model error",
    503: "Overloaded, shutting down, or state store unavailable (`Retry-After` header)",
    504: "Deadline exceeded",
    "4XX": "Other client error",
}
# The errors of the Responses and Conversations routes (stored objects, turns that continue them).
STORED_ERRORS = error_responses(_STORED_DESCRIPTIONS)


# --------------------------------------------------------------------------- a team run's answer
async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client has gone away (its `http.disconnect`)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def answer_run(
    request: Request,
    serve: Callable[[Callable[[], Awaitable[None]]], Awaitable[Response | dict[str, Any]]],
) -> Response:
    """The response of a team run: `serve(client_gone)` (the pipeline watches the client's
    disconnect), with the request's rate-limit headers; 499 when the client went away first."""
    headers = rate_limit_headers(request)
    try:
        result = await serve(lambda: wait_for_disconnect(request))
    except ClientGone:
        return Response(status_code=499)
    if isinstance(result, Response):
        result.headers.update(headers)
        return result
    return JSONResponse(result, headers=headers)
