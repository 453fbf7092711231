"""FastAPI dependencies: what a route needs, from the app's typed state (never globals).

They are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
request (and a pool of 40 threads shared by every request of the worker).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.lifecycle import Lifecycle
from service.observability.metrics import ServiceMetrics
from service.serving.context import ServingContext
from service.workflows.registry import WorkflowRegistry


async def get_context(request: Request) -> ServingContext:
    context: ServingContext = request.app.state.serving
    return context


async def get_registry(request: Request) -> WorkflowRegistry:
    registry: WorkflowRegistry = request.app.state.serving.registry
    return registry


async def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def get_lifecycle(request: Request) -> Lifecycle:
    lifecycle: Lifecycle = request.app.state.lifecycle
    return lifecycle


ContextDep = Annotated[ServingContext, Depends(get_context)]
RegistryDep = Annotated[WorkflowRegistry, Depends(get_registry)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
