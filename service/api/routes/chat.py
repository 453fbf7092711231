"""`POST /v1/chat/completions`: a thin route over `serve_autogen`, behind the protections.

The router's guards run in order before the body is validated: drain (503), API key (401),
JSON content type (415), rate limit (429). Backpressure (503) and deadlines (504) are enforced
by `serve_autogen` itself.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from service.api.cancellation import cancel_on_disconnect, wait_for_disconnect
from service.api.deps import ContextDep
from service.autogen_server import serve_autogen
from service.contract.chat import ChatCompletionChunk, Input, Output
from service.contract.errors import ErrorResponse, OpenAIError
from service.protection.auth import bearer_scheme, require_api_key
from service.protection.drain import refuse_while_draining
from service.protection.ratelimit import enforce_rate_limit, rate_limit_headers
from service.serving.errors import ClientGone


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
    """Dependency: the guards of the chat route, in order: drain (503), API key (401), JSON content
    type (415), rate limit (429).

    One dependency that calls the guards in turn rather than four: FastAPI resolves every dependency
    of a route on every request, and this is the hot path.
    """
    await refuse_while_draining(request)
    await require_api_key(request, credentials)
    await require_json(request)
    await enforce_rate_limit(request)


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
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _DESCRIPTIONS.items()
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
    headers = rate_limit_headers(request)
    try:
        if inp.stream:
            result = await serve_autogen(inp, ctx, client_gone=lambda: wait_for_disconnect(request))
        else:
            result = await cancel_on_disconnect(request, serve_autogen(inp, ctx))
    except ClientGone:
        return Response(status_code=499)
    if isinstance(result, Response):
        result.headers.update(headers)
        return result
    return JSONResponse(result, headers=headers)
