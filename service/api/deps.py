"""FastAPI dependencies: what a route needs, from the app's typed state (never globals).

They are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
request (and a pool of 40 threads shared by every request of the worker).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.app_state import get
from service.lifecycle import LIFECYCLE, Lifecycle
from service.observability.metrics import METRICS, ServiceMetrics
from service.serving.context import SERVING, ServingContext
from service.workflows.registry import WorkflowRegistry


async def get_context(request: Request) -> ServingContext:
    return get(request.app, SERVING)


async def get_registry(request: Request) -> WorkflowRegistry:
    return get(request.app, SERVING).registry


async def get_metrics(request: Request) -> ServiceMetrics:
    return get(request.app, METRICS)


async def get_lifecycle(request: Request) -> Lifecycle:
    return get(request.app, LIFECYCLE)


ContextDep = Annotated[ServingContext, Depends(get_context)]
RegistryDep = Annotated[WorkflowRegistry, Depends(get_registry)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
