"""JSON log lines on stdout with trace and request context.

Each record carries timestamp, level, message, logger, trace_id, span_id, request_id and, when
known, model. JSON encoding escapes CR/LF and ANSI codes, so user text cannot forge log lines;
string extras are additionally stripped of control characters and bounded.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from service.contract.errors import sanitize

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
model_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("model", default=None)

_HANDLER_NAME = "service-json"
# Fields that may carry user-controlled text: control characters removed, length bounded. A reason
# (why a workflow did not load, why a dependency failed) is kept whole enough to act on.
_SANITIZED_FIELDS = {"model": 200, "path": 200, "source": 500, "reason": 4000}


class ContextFilter(logging.Filter):
    """Adds trace/span ids of the current span and the request id/model of the current request."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else None
        record.span_id = format(context.span_id, "016x") if context.is_valid else None
        record.request_id = request_id_var.get()
        if getattr(record, "model", None) is None:
            record.model = model_var.get()
        for key, limit in _SANITIZED_FIELDS.items():
            value = record.__dict__.get(key)
            if isinstance(value, str):
                record.__dict__[key] = sanitize(value, limit)
        return True


class ServiceJsonFormatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(message)s %(name)s",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
            timestamp=False,
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record.pop("color_message", None)
        for key in ("trace_id", "span_id", "request_id", "model"):
            log_record.setdefault(key, getattr(record, key, None))


class DropCancellation(logging.Filter):
    """AgentChat logs a cancelled run (our client disconnected) as an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def configure_logging(level: str, access_log: bool = True) -> None:
    """Send the service's and the servers' logs to stdout as JSON (idempotent).

    With `access_log` off, uvicorn's access logger gets no handler anywhere: uvicorn then skips the
    access line altogether (it checks `hasHandlers()` per connection).
    """
    root = logging.getLogger()
    root.setLevel(level)
    if not any(handler.get_name() == _HANDLER_NAME for handler in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(ServiceJsonFormatter())
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = access_log or name != "uvicorn.access"
    # AgentChat logs every runtime message at INFO; formatting those costs CPU per token chunk.
    for name in ("autogen_core", "autogen_core.events", "autogen_agentchat", "autogen_agentchat.events"):
        agent_logger = logging.getLogger(name)
        agent_logger.setLevel(logging.WARNING)
        if not any(isinstance(item, DropCancellation) for item in agent_logger.filters):
            agent_logger.addFilter(DropCancellation())
