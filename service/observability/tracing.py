"""OpenTelemetry tracing, configured from the standard `OTEL_*` variables when a worker starts.

Off by default (`OTEL_TRACES_EXPORTER=none`): the tracer is the API's no-op tracer, so spans cost
next to nothing. The service never installs a *global* tracer provider: autogen-core's runtime
traces every internal message through the global provider (hundreds of spans per team request),
so it stays on the no-op provider, and the service's own spans form the documented tree:

    HTTP server span (opentelemetry-instrumentation-fastapi, no span per SSE chunk)
      serve_autogen
        invoke_workflow                      gen_ai.operation.name=invoke_workflow
          invoke_agent <agent>               gen_ai.agent.name, one per agent turn
            chat <model>                     gen_ai.request.model, gen_ai.usage.*_tokens
        create_non_streaming_response / handle_response   (non-streaming)
      generate_streaming_response                        (streaming)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from service.config import Settings

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
INSTRUMENTATION_NAME = "autogen-service"


# True while a stream is being generated: per-chunk helpers then add no span of their own.
inside_stream: contextvars.ContextVar[bool] = contextvars.ContextVar("inside_stream", default=False)


@dataclass
class _TracingState:
    tracer: Tracer
    provider: TracerProvider | None = None
    global_decided: bool = False

    @property
    def enabled(self) -> bool:
        """False while the tracer is the no-op one (no provider): `traced` then calls straight
        through, with no span context to enter and leave on every call of the hot path."""
        return self.provider is not None


_state = _TracingState(tracer=trace.NoOpTracer())


def get_tracer() -> Tracer:
    """The service's tracer (no-op until `configure_tracing` installs a provider in this worker)."""
    return _state.tracer


def _exporter(settings: Settings) -> SpanExporter | None:
    kind = settings.otel_traces_exporter.strip().lower()
    if kind in ("", "none"):
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp":
        protocol = (settings.otel_exporter_otlp_protocol or "grpc").strip().lower()
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            return GrpcExporter()  # endpoint, headers, TLS: from the standard OTEL_EXPORTER_OTLP_* vars
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(f"unsupported OTEL_TRACES_EXPORTER {kind!r}: use otlp, console or none")


def configure_tracing(settings: Settings, processor: SpanProcessor | None = None) -> TracerProvider | None:
    """Create this worker's tracer provider (call after fork: the app's lifespan does).

    Args:
        settings: exporter choice from `OTEL_TRACES_EXPORTER` / `OTEL_EXPORTER_OTLP_PROTOCOL`.
        processor: an explicit span processor (tests pass one with an in-memory exporter).

    Returns:
        The provider, or None when tracing is off.
    """
    exporter = _exporter(settings)
    if exporter is None and processor is None:
        _state.tracer, _state.provider = trace.NoOpTracer(), None
        return None
    resource = Resource.create({"service.name": settings.otel_service_name})
    provider = TracerProvider(resource=resource)
    if processor is not None:
        provider.add_span_processor(processor)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _state.tracer, _state.provider = provider.get_tracer(INSTRUMENTATION_NAME), provider
    logger.info("tracing on", extra={"exporter": settings.otel_traces_exporter})
    return provider


def decide_agent_runtime_tracing(enabled: bool, provider: TracerProvider | None) -> None:
    """What AutoGen itself may trace, decided once per worker.

    autogen-core and AgentChat trace through the *global* tracer provider. Off (the default), the
    global provider is the no-op one, set explicitly: with none set, every AgentChat span lookup
    goes through the API's proxy provider, which consults the environment on each call. On, they
    trace into the service's provider and the runtime adds its own spans per bus message.
    """
    # autogen-core reads this when each team builds its runtime (the documented switch for teams
    # loaded from component JSON, whose runtime the service does not construct).
    os.environ["AUTOGEN_DISABLE_RUNTIME_TRACING"] = "false" if enabled else "true"
    if not _state.global_decided:
        _state.global_decided = True
        trace.set_tracer_provider(
            provider if enabled and provider is not None else trace.NoOpTracerProvider()
        )


def shutdown_tracing() -> None:
    provider = _state.provider
    _state.tracer, _state.provider = trace.NoOpTracer(), None
    if provider is not None:
        provider.shutdown()


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """HTTP server spans from opentelemetry-instrumentation-fastapi, without a span per SSE chunk."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        exclude_spans=["send", "receive"],
        excluded_urls="healthz,readyz,metrics",
    )


def record_error(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.set_attribute("error.type", type(exc).__name__)


def traced(function: F) -> F:
    """Wrap a function, coroutine function or async generator in a span named after it.

    Exceptions are recorded on the span with status ERROR and re-raised. An async generator's span
    covers its whole iteration, so a stream has one span, not one per chunk; plain functions called
    per chunk inside it (`handle_response`) make no span of their own there. With tracing off in
    this worker (the default), calls go straight through: no no-op span is entered per call.
    """
    name = function.__name__

    if inspect.isasyncgenfunction(function):

        async def traced_generator(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            with get_tracer().start_as_current_span(name, record_exception=False) as span:
                token = inside_stream.set(True)
                try:
                    async for item in function(*args, **kwargs):
                        yield item
                except BaseException as exc:
                    if not isinstance(exc, GeneratorExit):
                        record_error(span, exc)
                    raise
                finally:
                    with contextlib.suppress(ValueError):  # closed from another context
                        inside_stream.reset(token)

        @functools.wraps(function)
        def generator_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            if not _state.enabled:
                return cast(AsyncIterator[Any], function(*args, **kwargs))
            return traced_generator(*args, **kwargs)

        return cast(F, generator_wrapper)

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def coroutine_wrapper(*args: Any, **kwargs: Any) -> Any:
            if not _state.enabled:
                return await function(*args, **kwargs)
            with get_tracer().start_as_current_span(name, record_exception=False) as span:
                try:
                    return await function(*args, **kwargs)
                except BaseException as exc:
                    record_error(span, exc)
                    raise

        return cast(F, coroutine_wrapper)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not _state.enabled or inside_stream.get():
            return function(*args, **kwargs)
        with get_tracer().start_as_current_span(name, record_exception=False) as span:
            try:
                return function(*args, **kwargs)
            except BaseException as exc:
                record_error(span, exc)
                raise

    return cast(F, wrapper)
