"""The app factory: `create_app()` builds the FastAPI app; its lifespan loads the workflows.

No work happens at import time: settings are read, logging configured and workflows loaded
when the app is created and started (after gunicorn forks its workers).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry.sdk.trace import SpanProcessor

from service.api.error_handlers import install_error_handlers
from service.api.middleware import RequestIdMiddleware
from service.api.routes import chat, conversations, health, metrics, models, responses
from service.api.routes.pages import install_pages
from service.app_state import put
from service.config import SETTINGS, Settings, load_settings
from service.gc_tuning import tune_gc
from service.lifecycle import LIFECYCLE, Lifecycle
from service.observability.logging import configure_logging
from service.observability.metrics import METRICS, ServiceMetrics
from service.observability.tracing import (
    configure_tracing,
    decide_agent_runtime_tracing,
    instrument_app,
    shutdown_tracing,
)
from service.protection.capacity import WorkflowSlots
from service.protection.install import install_protection, log_protection
from service.serving.context import SERVING, ServingContext
from service.state import STATE_STORE, StateStoreHandle
from service.workflows.handler_discovery import cache_handler_discovery
from service.workflows.registry import WorkflowRegistry

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    registry: WorkflowRegistry | None = None,
    span_processor: SpanProcessor | None = None,
) -> FastAPI:
    """Build the service (gunicorn calls this in each worker, after the fork).

    Args:
        settings: defaults to the environment (`load_settings`), validated with a clear message.
        registry: pre-filled registry (e.g. workflows registered from Python); the built-ins and
            `WORKFLOWS_DIR` are loaded into it at start-up.
        span_processor: an extra span processor (tests use an in-memory exporter).
    """
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.access_log)
    lifecycle = Lifecycle()
    tracer_provider = configure_tracing(settings, span_processor)
    decide_agent_runtime_tracing(settings.autogen_runtime_tracing, tracer_provider)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workflows = registry or WorkflowRegistry(settings)
        report = workflows.load_defaults()
        await workflows.start_shared()
        agents = {workflow.id: workflow.agent_names for workflow in workflows.all()}
        service_metrics = ServiceMetrics(
            known_models=[workflow.id for workflow in workflows.all()],
            known_agents=agents,
            page_cache_s=settings.metrics_cache_s,
        )
        put(app, METRICS, service_metrics)
        state_store.on_error = service_metrics.state_errors.inc
        serving = ServingContext(
            settings=settings,
            registry=workflows,
            metrics=service_metrics,
            slots=WorkflowSlots(settings.max_concurrent_workflows, service_metrics.active_workflows),
        )
        put(app, SERVING, serving)
        service_metrics.workflow_capacity.set(settings.max_concurrent_workflows)
        lifecycle.workflows_loaded = bool(workflows.all())
        log_protection(app, settings)
        cache_handler_discovery()
        tune_gc(settings)
        logger.info(
            "workflows loaded",
            extra={
                "models": report.loaded,
                "failed": report.failed,
                "llm": "openai-compatible" if settings.uses_real_llm else "embedded",
            },
        )
        try:
            yield
        finally:
            lifecycle.start_draining()
            await workflows.aclose()
            await state_store.aclose()
            shutdown_tracing()

    app = FastAPI(
        title="AutoGen service",
        summary="AutoGen AgentChat teams served as an OpenAI-compatible chat-completions API.",
        version="0.1.0",
        lifespan=lifespan,
        # The docs pages are served from the package's own assets (no CDN): see routes/pages.py.
        docs_url=None,
        redoc_url=None,
    )
    put(app, SETTINGS, settings)
    put(app, LIFECYCLE, lifecycle)
    # Stored responses and conversations: opened on the first Responses request (service.state).
    state_store = StateStoreHandle(settings)
    put(app, STATE_STORE, state_store)
    install_error_handlers(app)
    routers = (
        chat.router,
        responses.router,
        conversations.router,
        models.router,
        health.router,
        metrics.router,
    )
    for router in routers:
        app.include_router(router)
    install_pages(app)
    install_protection(app, settings)
    app.add_middleware(RequestIdMiddleware)
    if tracer_provider is not None:
        instrument_app(app, tracer_provider)
    return app
