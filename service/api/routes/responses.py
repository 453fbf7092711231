"""`/v1/responses`: create a response (streamed or not), read, delete, list its input items.

Thin routes over `service.serving.responses`, behind the protections of chat completions: drain
(503), API key (401), JSON body (415, on POST), rate limit (429; one budget per key for every API);
capacity (503) and deadlines (504) in the serving code. Stored objects belong to the API key that
made them: another key gets 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from service.api.deps import (
    STORED_ERRORS,
    After,
    ContextDep,
    IdPath,
    Limit,
    Order,
    OwnerDep,
    StatesDep,
    admit_chat_request,
    admit_read_request,
    answer_run,
)
from service.contract.responses import CreateResponse, ItemList, ResponseDeleted, ResponseObject
from service.serving.responses import stored
from service.serving.responses.paging import DEFAULT_PAGE
from service.serving.responses.protocol import serve_responses

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
        **STORED_ERRORS,
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
    return await answer_run(
        request, lambda client_gone: serve_responses(body, ctx, states, owner, client_gone)
    )


@router.get(
    "/v1/responses/{response_id}",
    dependencies=[Depends(admit_read_request)],
    response_model=ResponseObject,
    responses=STORED_ERRORS,
    summary="Retrieve a stored response",
)
async def retrieve_response(response_id: IdPath, states: StatesDep, owner: OwnerDep) -> dict[str, Any]:
    return await stored.get_response(states, response_id, owner)


@router.delete(
    "/v1/responses/{response_id}",
    dependencies=[Depends(admit_read_request)],
    response_model=ResponseDeleted,
    responses=STORED_ERRORS,
    summary="Delete a stored response and its saved state",
)
async def delete_response(response_id: IdPath, states: StatesDep, owner: OwnerDep) -> dict[str, Any]:
    return await stored.delete_response(states, response_id, owner)


@router.get(
    "/v1/responses/{response_id}/input_items",
    dependencies=[Depends(admit_read_request)],
    response_model=ItemList,
    responses=STORED_ERRORS,
    summary="List the input items of a stored response",
)
async def list_input_items(
    response_id: IdPath,
    states: StatesDep,
    owner: OwnerDep,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
    order: Order = "desc",
) -> dict[str, Any]:
    return await stored.list_input_items(states, response_id, owner, after=after, limit=limit, order=order)
