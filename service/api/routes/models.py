"""`GET /v1/models` and `GET /v1/models/{id}`: one entry per served workflow (API key required)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.api.deps import RegistryDep, error_responses
from service.contract.errors import model_not_found
from service.contract.models import ModelCard, ModelList
from service.protection.auth import require_api_key
from service.workflows.registry import Workflow

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])

_UNAUTHORIZED = error_responses({401: "Missing or invalid API key"})


def _card(workflow: Workflow) -> ModelCard:
    return ModelCard(id=workflow.id, created=workflow.created, description=workflow.description)


@router.get("/v1/models", response_model=ModelList, responses=_UNAUTHORIZED, summary="List the served teams")
async def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(data=[_card(workflow) for workflow in registry.all()])


@router.get(
    "/v1/models/{model_id:path}",
    response_model=ModelCard,
    responses=error_responses(
        {
            401: "Missing or invalid API key",
            404: "Unknown model",
            # FastAPI's 422 is never sent: every client error is in the OpenAI shape.
            "4XX": "Other client error",
        }
    ),
    summary="Describe one served team",
)
async def retrieve_model(model_id: str, registry: RegistryDep) -> ModelCard:
    workflow = registry.get(model_id)
    if workflow is None:
        raise model_not_found(model_id)
    return _card(workflow)
