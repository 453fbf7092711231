"""`POST /v1/chat/completions`: a thin route over `serve_autogen`, behind the protections.

The router's guards run in order before the body is validated: drain (503), API key (401),
JSON content type (415), rate limit (429). Backpressure (503) and deadlines (504) are enforced
by `serve_autogen` itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from service.api.deps import ContextDep, admit_chat_request, answer_run, error_responses
from service.autogen_server import serve_autogen
from service.contract.chat import ChatCompletionChunk, Input, Output

router = APIRouter(tags=["chat"], dependencies=[Depends(admit_chat_request)])

_DESCRIPTIONS: dict[int | str, str] = {
    400: "Invalid request",
    401: "Missing or invalid API key",
    404: "Unknown model",
    413: "Request body too large",
    415: "Request body not declared as JSON",
    429: "Rate limited (`Retry-After`, `x-ratelimit-*` headers)",
    500: "Server error",
    502: "Upstream model error",
    503: "Overloaded or shutting down (`Retry-After` header)",
    504: "Deadline exceeded",
    # Any other 4xx (405, ...) has the same shape; FastAPI's 422 is never sent (it is a 400).
    "4XX": "Other client error",
}
# The schema of one event of the stream (OpenAPI/schemathesis validate SSE responses per event).
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "A `chat.completion.chunk` as JSON (fields: "
            + ", ".join(ChatCompletionChunk.model_fields)
            + "); `[DONE]` as the last event; or, for a failure after the first byte, an OpenAI "
            'error object (`{"error": {...}}`) as the last event. `: ping` comments keep the '
            "connection alive while an agent thinks.",
        },
        "event": {"type": "string"},
    },
}
_ERRORS = error_responses(_DESCRIPTIONS)


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
                "text/event-stream": {"schema": _SSE_EVENT},
            },
        },
    },
    summary="Run a team as a chat completion",
)
async def create_chat_completion(inp: Input, request: Request, ctx: ContextDep) -> Response:
    """Run the team named by `model` on the conversation; stream with `stream: true`.

    The run is raced against the client's disconnect until the response starts (a stream waits for
    its first event before committing its status); a stream then cancels its run when it closes.
    """
    return await answer_run(request, lambda client_gone: serve_autogen(inp, ctx, client_gone))
