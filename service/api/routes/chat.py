"""`POST /v1/chat/completions`: a thin route over `serve_autogen`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service.api.cancellation import ClientDisconnected, cancel_on_disconnect
from service.api.deps import ContextDep
from service.api.protocol import ChatCompletionChunk, ErrorResponse, Input, Output
from service.autogen_server import serve_autogen

router = APIRouter(tags=["chat"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request",
        401: "Missing or invalid API key",
        404: "Unknown model",
        413: "Request body too large",
        429: "Rate limited",
        500: "Server error",
        502: "Upstream model error",
        503: "Overloaded or shutting down",
        504: "Deadline exceeded",
    }.items()
}


@router.post(
    "/v1/chat/completions",
    response_model=Output,
    responses={
        **_ERRORS,
        200: {
            "description": "A `chat.completion`, or with `stream: true` an SSE stream of "
            "`chat.completion.chunk` events ending with `data: [DONE]`.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Output"}},
                "text/event-stream": {"schema": ChatCompletionChunk.model_json_schema()},
            },
        },
    },
    summary="Run a team as a chat completion",
)
async def create_chat_completion(inp: Input, request: Request, ctx: ContextDep) -> Response:
    """Run the team named by `model` on the conversation; stream with `stream: true`."""
    if inp.stream:
        response = await serve_autogen(inp, ctx)
        assert isinstance(response, Response)
        return response
    try:
        body = await cancel_on_disconnect(request, serve_autogen(inp, ctx))
    except ClientDisconnected:
        return Response(status_code=499)
    assert isinstance(body, dict)
    return JSONResponse(body)
