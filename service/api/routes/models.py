"""`GET /v1/models` and `GET /v1/models/{id}`: one entry per served workflow."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RegistryDep
from service.api.errors import model_not_found
from service.api.protocol import ErrorResponse, ModelCard, ModelList
from service.workflows.registry import Workflow

router = APIRouter(tags=["models"])


def _card(workflow: Workflow) -> ModelCard:
    return ModelCard(id=workflow.id, created=workflow.created, description=workflow.description)


@router.get("/v1/models", response_model=ModelList, summary="List the served teams")
async def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(data=[_card(workflow) for workflow in registry.all()])


@router.get(
    "/v1/models/{model_id:path}",
    response_model=ModelCard,
    responses={404: {"model": ErrorResponse}},
    summary="Describe one served team",
)
async def retrieve_model(model_id: str, registry: RegistryDep) -> ModelCard:
    workflow = registry.get(model_id)
    if workflow is None:
        raise model_not_found(model_id)
    return _card(workflow)
