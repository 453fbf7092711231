"""JSON log lines on stdout with trace and request context, gunicorn's own lines included.

Each record carries timestamp, level, message, logger, pid, trace_id, span_id, request_id and, when
known, model. JSON encoding escapes CR/LF and ANSI codes, so user text cannot forge log lines;
string extras are additionally stripped of control characters and bounded. Access lines never carry
the value of a credential-like query parameter (`?api_key=...` is logged as `?api_key=***`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import sys
from typing import Any
from urllib.parse import unquote_plus

from gunicorn import glogging
from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from service.contract.errors import sanitize

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
model_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("model", default=None)

_HANDLER_NAME = "service-json"
# Fields that may carry user-controlled text: control characters removed, length bounded. A reason
# (why a workflow did not load, why a dependency failed) is kept whole enough to act on.
_SANITIZED_FIELDS = {"model": 200, "path": 200, "source": 500, "reason": 4000, "client": 200}


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


# Query parameters whose value is a credential (`api_key`, `x-api-key`, `access_token`, `key`, ...).
_SECRET_PARAMETER = re.compile(r"(?:key|token|secret|password|passwd|signature|sig|auth|authorization)$")


def redact_query(target: str) -> str:
    """A request target (`/path?query`) with the values of credential-like parameters replaced."""
    path, separator, query = target.partition("?")
    if not separator:
        return target
    parts = []
    for parameter in query.split("&"):
        name, equals, _value = parameter.partition("=")
        if equals and _SECRET_PARAMETER.search(unquote_plus(name).lower().replace("-", "_")):
            parameter = f"{name}=***"
        parts.append(parameter)
    return f"{path}?{'&'.join(parts)}"


class RedactAccessLog(logging.Filter):
    """uvicorn's access line (`client - "METHOD target HTTP/x" status`) without credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (args[0], args[1], redact_query(args[2]), args[3], args[4])
        return True


class ServiceJsonFormatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(message)s %(name)s %(process)d",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger", "process": "pid"},
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
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(item, RedactAccessLog) for item in access.filters):
        access.addFilter(RedactAccessLog())
    # AgentChat logs every runtime message at INFO; formatting those costs CPU per token chunk.
    for name in ("autogen_core", "autogen_core.events", "autogen_agentchat", "autogen_agentchat.events"):
        agent_logger = logging.getLogger(name)
        agent_logger.setLevel(logging.WARNING)
        if not any(isinstance(item, DropCancellation) for item in agent_logger.filters):
            agent_logger.addFilter(DropCancellation())


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger writing the service's JSON lines (gunicorn's `logger_class`).

    Its lines that repeat a fact the service logs itself (the listening address, with the links) or
    only name internals (the worker class; a worker closing a listener uvicorn already closed) go to
    DEBUG.
    """

    _REPEATED = ("Listening at: ", "Using worker: ", "Error while closing socket [Errno 9]")

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        configure_logging(str(cfg.loglevel).upper())

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        text = msg % args if isinstance(msg, str) and args else msg
        if isinstance(text, str) and text.startswith(self._REPEATED):
            self.debug(msg, *args, **kwargs)
            return
        super().info(msg, *args, **kwargs)


# Start-up lines every worker would repeat: uvicorn's own (gunicorn already logs each worker's boot),
# and the service's, which the first worker logs for all of them.
_UVICORN_STARTUP = ("Started server process [%d]", "Waiting for application startup.")
_SERVICE_STARTUP_LOGGERS = (
    "service.app",
    "service.gc_tuning",
    "service.protection",
    "service.workflows.registry",
    "service.observability.tracing",
)


class WorkerStartupFilter(logging.Filter):
    """While a gunicorn worker starts, drops the lines that other processes already logged.

    uvicorn's start-up lines are dropped in every worker; a worker started with its siblings (not the
    first of them, nor a replacement) also drops the service's INFO and WARNING start-up lines, which
    the first worker logs identically. Errors always pass. `done()` ends the filtering.
    """

    def __init__(self, sibling: bool) -> None:
        super().__init__()
        self.sibling = sibling
        self.starting = True

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.starting:
            return True
        if record.name == "uvicorn.error" and record.msg in _UVICORN_STARTUP:
            return False
        if self.sibling and record.levelno < logging.ERROR:
            return not record.name.startswith(_SERVICE_STARTUP_LOGGERS)
        return True

    def install(self) -> None:
        for handler in _service_handlers():
            handler.addFilter(self)

    def done(self) -> None:
        self.starting = False
        for handler in _service_handlers():
            handler.removeFilter(self)


def _service_handlers() -> list[logging.Handler]:
    return [handler for handler in logging.getLogger().handlers if handler.get_name() == _HANDLER_NAME]
