"""`GET /v1/models` and `GET /v1/models/{id}`: one entry per served workflow (API key required)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from service.api.deps import RegistryDep
from service.contract.errors import ErrorResponse, model_not_found
from service.contract.models import ModelCard, ModelList
from service.protection.auth import require_api_key
from service.workflows.registry import Workflow

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])

_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid API key"}
}


def _card(workflow: Workflow) -> ModelCard:
    return ModelCard(id=workflow.id, created=workflow.created, description=workflow.description)


@router.get("/v1/models", response_model=ModelList, responses=_UNAUTHORIZED, summary="List the served teams")
async def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(data=[_card(workflow) for workflow in registry.all()])


@router.get(
    "/v1/models/{model_id:path}",
    response_model=ModelCard,
    responses={
        **_UNAUTHORIZED,
        404: {"model": ErrorResponse, "description": "Unknown model"},
        # FastAPI's 422 is never sent: every client error is in the OpenAI shape.
        "4XX": {"model": ErrorResponse, "description": "Other client error"},
    },
    summary="Describe one served team",
)
async def retrieve_model(model_id: str, registry: RegistryDep) -> ModelCard:
    workflow = registry.get(model_id)
    if workflow is None:
        raise model_not_found(model_id)
    return _card(workflow)
