"""`/v1/responses`: create a response (streamed or not), read, delete, list its input items.

Thin routes over `service.serving.responses`, behind the protections of chat completions: drain
(503), API key (401), JSON body (415, on POST), rate limit (429; one budget per key for every API);
capacity (503) and deadlines (504) in the serving code. Stored objects belong to the API key that
made them: another key gets 404.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from service.api.cancellation import cancel_on_disconnect
from service.api.deps import ContextDep
from service.api.routes.chat import admit_chat_request
from service.app_state import get
from service.contract.errors import ErrorResponse
from service.contract.responses import CreateResponse, ItemList, ResponseDeleted, ResponseObject
from service.protection.auth import bearer_scheme, require_api_key
from service.protection.drain import refuse_while_draining
from service.protection.ratelimit import enforce_rate_limit, rate_limit_headers
from service.serving import responses as serving
from service.serving.errors import ClientGone
from service.state import ANONYMOUS_OWNER, STATE_STORE, StateStoreHandle


async def admit_read_request(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Dependency: the guards of a request without a body: drain (503), API key (401), rate limit (429)."""
    await refuse_while_draining(request)
    await require_api_key(request, credentials)
    await enforce_rate_limit(request)


async def get_states(request: Request) -> StateStoreHandle:
    states = get(request.app, STATE_STORE)
    return states


async def get_owner(request: Request) -> str:
    """Who owns what this request stores or reads: the API key's fingerprint (set by the guards),
    or one shared owner when authentication is off."""
    key_id = getattr(request.state, "api_key_id", None)
    return str(key_id) if key_id else ANONYMOUS_OWNER


StatesDep = Annotated[StateStoreHandle, Depends(get_states)]
OwnerDep = Annotated[str, Depends(get_owner)]
IdPath = Annotated[str, Path(max_length=128)]
After = Annotated[str | None, Query(max_length=128, description="An item id: the page after it.")]
Limit = Annotated[int, Query(ge=1, le=100, description="Items per page (1-100).")]
Order = Annotated[Literal["asc", "desc"], Query(description="`desc` (default): newest first.")]

_DESCRIPTIONS: dict[int | str, str] = {
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
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _DESCRIPTIONS.items()
}
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "description": "The event's `type`."},
        "data": {
            "type": "string",
            "description": "A Responses stream event as JSON, with `type` and `sequence_number`: "
            "`response.created`, `response.in_progress`, `response.output_item.added`, "
            "`response.reasoning_summary_part.added`, `response.reasoning_summary_text.delta`/`.done`, "
            "`response.reasoning_summary_part.done`, `response.content_part.added`, "
            "`response.output_text.delta`/`.done`, `response.content_part.done`, "
            "`response.output_item.done`, then `response.completed`, `response.incomplete` or "
            "`response.failed`. `: ping` comments keep the connection alive while an agent thinks.",
        },
    },
}

router = APIRouter(tags=["responses"])


@router.post(
    "/v1/responses",
    dependencies=[Depends(admit_chat_request)],
    response_model=ResponseObject,
    responses={
        **ERRORS,
        200: {
            "description": "A `response`, or with `stream: true` an SSE stream of Responses events.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ResponseObject"}},
                "text/event-stream": {"schema": _SSE_EVENT},
            },
        },
    },
    summary="Run a team turn as a response",
)
async def create_response(
    body: CreateResponse, request: Request, ctx: ContextDep, states: StatesDep, owner: OwnerDep
) -> Response:
    """Run the team named by `model`: a new conversation, or a continuation of a stored response
    (`previous_response_id`) or conversation (`conversation`) from the team's saved state."""
    headers = rate_limit_headers(request)
    try:
        result = await cancel_on_disconnect(request, serving.serve_responses(body, ctx, states, owner))
    except ClientGone:
        return Response(status_code=499)
    if isinstance(result, Response):
        result.headers.update(headers)
        return result
    return JSONResponse(result, headers=headers)


@router.get(
    "/v1/responses/{response_id}",
    dependencies=[Depends(admit_read_request)],
    response_model=ResponseObject,
    responses=ERRORS,
    summary="Retrieve a stored response",
)
async def retrieve_response(response_id: IdPath, states: StatesDep, owner: OwnerDep) -> dict[str, Any]:
    return await serving.get_response(states, response_id, owner)


@router.delete(
    "/v1/responses/{response_id}",
    dependencies=[Depends(admit_read_request)],
    response_model=ResponseDeleted,
    responses=ERRORS,
    summary="Delete a stored response and its saved state",
)
async def delete_response(response_id: IdPath, states: StatesDep, owner: OwnerDep) -> dict[str, Any]:
    return await serving.delete_response(states, response_id, owner)


@router.get(
    "/v1/responses/{response_id}/input_items",
    dependencies=[Depends(admit_read_request)],
    response_model=ItemList,
    responses=ERRORS,
    summary="List the input items of a stored response",
)
async def list_input_items(
    response_id: IdPath,
    states: StatesDep,
    owner: OwnerDep,
    after: After = None,
    limit: Limit = serving.DEFAULT_PAGE,
    order: Order = "desc",
) -> dict[str, Any]:
    return await serving.list_input_items(states, response_id, owner, after=after, limit=limit, order=order)
