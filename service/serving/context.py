"""What the request path needs from the running app, built once per worker in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from service.app_state import StateKey
from service.config import Settings
from service.observability.metrics import ServiceMetrics
from service.protection.capacity import WorkflowSlots
from service.workflows.registry import WorkflowRegistry


@dataclass
class ServingContext:
    settings: Settings
    registry: WorkflowRegistry
    metrics: ServiceMetrics
    slots: WorkflowSlots


SERVING: StateKey[ServingContext] = StateKey("serving", ServingContext)
