"""FastAPI dependencies: what a route needs, reached through `request.app.state`, never globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.autogen_server import ServingContext
from service.config import Settings
from service.lifecycle import Lifecycle
from service.observability.metrics import ServiceMetrics
from service.workflows.registry import WorkflowRegistry


def get_context(request: Request) -> ServingContext:
    context: ServingContext = request.app.state.serving
    return context


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_registry(request: Request) -> WorkflowRegistry:
    registry: WorkflowRegistry = request.app.state.serving.registry
    return registry


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


def get_lifecycle(request: Request) -> Lifecycle:
    lifecycle: Lifecycle = request.app.state.lifecycle
    return lifecycle


ContextDep = Annotated[ServingContext, Depends(get_context)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[WorkflowRegistry, Depends(get_registry)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
