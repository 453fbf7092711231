"""HTTP connection limits, enforced by each worker before a request reaches the app.

uvicorn's httptools protocol puts no limit on the size of a request's head, has no timeout for
receiving the head or the body (`timeout_keep_alive` covers idle connections between requests
only), and accepts connections until the process runs out of file descriptors. Middleware cannot
help: it runs once the head is parsed. `GuardedHttpToolsProtocol` adds, per connection:

- head size: the request line and headers are counted before the parser sees them; past
  `MAX_HEADER_BYTES` the client gets 431 and the connection is closed, so an oversized header costs
  at most that much memory and parsing, whoever sends it (this runs before authentication);
- head deadline: the head must arrive within `HEADER_TIMEOUT_S` of the connection opening (or of the
  first byte of the next request on a kept-alive connection): then 408 and close (a connection that
  sent nothing is just closed);
- body deadline: the body must arrive within `BODY_TIMEOUT_S` of the head: then 408 and close;
- shutdown: a connection still sending its head or body gets 503 and is closed at once, so a slow
  upload never holds a graceful shutdown (open responses, streams included, still run to the end).

and per worker (`ConnectionGuard`), at most `MAX_CONNECTIONS` open connections. At the cap, the
connection that has waited longest without a request in progress (idle keep-alive, or still sending
its head) is closed to make room: slow or silent clients cannot lock others out while any connection
is idle. When every connection has a request in progress, the new one gets 503. Every refusal is
counted in `autogen_rejected_total{reason}` and logged at most once a minute per kind.

An error answered here is followed by a lingering close: the server stops sending, then reads and
discards what the client still sends for up to `LINGER_S` before closing, so a client that is still
writing its request reads the answer instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from service.config import Settings
from service.contract.errors import OpenAIError
from service.observability.metrics import ServiceMetrics

logger = logging.getLogger("service.connections")

LOG_INTERVAL_S = 60.0
LINGER_S = 2.0
# File descriptors a worker keeps for everything but client connections: the listener, logs,
# metric files, Redis and upstream LLM connections.
FD_RESERVE = 128


class _Phase(enum.Enum):
    WAITING = "waiting"  # no request begun: a fresh or an idle kept-alive connection
    HEAD = "head"  # request line and headers arriving
    BODY = "body"  # head complete, body arriving
    BUSY = "busy"  # request received, its response not finished
    CLOSING = "closing"  # answered here; what the client still sends is discarded until the close


_RECEIVING_HEAD = (_Phase.WAITING, _Phase.HEAD)
_HEAD_TIMEOUT_LOG = "request headers not received within HEADER_TIMEOUT_S: 408 (or closed if nothing came)"


class ConnectionGuard:
    """The limits of one worker, its waiting connections (oldest first) and the rejection reports."""

    def __init__(
        self,
        *,
        max_header_bytes: int,
        header_timeout_s: float,
        body_timeout_s: float,
        max_connections: int,
        metrics: Callable[[], ServiceMetrics | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        self._metrics = metrics
        self._clock = clock
        # Connections without a request in progress, in the order they started waiting.
        self._waiting: OrderedDict[GuardedHttpToolsProtocol, None] = OrderedDict()
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, metrics: Callable[[], ServiceMetrics | None], max_connections: int
    ) -> ConnectionGuard:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_connections=max_connections,
            metrics=metrics,
        )

    # Connection bookkeeping (called by the protocol)

    def opened(self, connection: GuardedHttpToolsProtocol, open_connections: int) -> bool:
        """Count a new connection; False when it must be refused (the worker is full of busy ones)."""
        metrics = self._metrics()
        if metrics is not None:
            metrics.open_connections.inc()
        if open_connections > self.max_connections:
            if self._waiting:
                oldest, _ = self._waiting.popitem(last=False)
                oldest.evict()
            else:
                return False
        self._waiting[connection] = None
        return True

    def waiting(self, connection: GuardedHttpToolsProtocol) -> None:
        self._waiting[connection] = None
        self._waiting.move_to_end(connection)

    def closing(self, connection: GuardedHttpToolsProtocol) -> None:
        """An answered connection lingering before its close: the first to go at the cap."""
        self._waiting[connection] = None
        self._waiting.move_to_end(connection, last=False)

    def busy(self, connection: GuardedHttpToolsProtocol) -> None:
        self._waiting.pop(connection, None)

    def closed(self, connection: GuardedHttpToolsProtocol) -> None:
        self._waiting.pop(connection, None)
        metrics = self._metrics()
        if metrics is not None:
            metrics.open_connections.dec()

    # Rejections

    def rejected(self, reason: str, message: str) -> None:
        """Count a refused or closed connection; log the first of a minute per kind, with a count."""
        metrics = self._metrics()
        if metrics is not None:
            metrics.rejected.labels(reason).inc()
        self._unlogged[message] = self._unlogged.get(message, 0) + 1
        now = self._clock()
        last = self._logged_at.get(message)
        if last is not None and now - last < LOG_INTERVAL_S:
            return
        self._logged_at[message] = now
        count = self._unlogged.pop(message)
        logger.warning(
            message,
            extra={"reason": reason, "connections_closed": count, "log_interval_s": LOG_INTERVAL_S},
        )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    guard: ClassVar[ConnectionGuard]  # set on the per-worker subclass made by `guarded_protocol`

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._phase = _Phase.WAITING
        self._head_bytes = 0
        self._heads_completed = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.opened(self, len(self.connections)):
            self._reject(
                503,
                "connection_limit",
                "The server is at its connection limit. Retry the request.",
                "overloaded",
                log="connection limit reached and every connection is busy: new connections get 503",
                retry_after=True,
            )
            return
        self._head_timer = self.loop.call_later(self.guard.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self.guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.CLOSING:
            return  # answered already: the rest of the request is read and dropped
        limit = self.guard.max_header_bytes
        while data:
            counted = self._phase in _RECEIVING_HEAD
            if counted:
                room = limit - self._head_bytes
                if room <= 0:
                    self._reject(
                        431,
                        "headers_too_large",
                        f"Request headers too large: at most {limit} bytes (request line and headers).",
                        "request_headers_too_large",
                        log="request headers over MAX_HEADER_BYTES refused with 431",
                        error_type="invalid_request_error",
                    )
                    return
                # The parser never sees more of a head than the limit allows.
                piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            else:
                piece, data = data, b""
            heads_before = self._heads_completed
            super().data_received(piece)
            if self._answered():
                return
            if counted and self._heads_completed == heads_before and self._phase in _RECEIVING_HEAD:
                self._head_bytes += len(piece)
        if self._phase is _Phase.HEAD and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.guard.header_timeout_s, self._head_timed_out)
        elif self._phase is _Phase.BODY and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.guard.body_timeout_s, self._body_timed_out)

    def _answered(self) -> bool:
        """True once this connection was answered here or is closing (the parser is done)."""
        return self._phase is _Phase.CLOSING or self.transport.is_closing()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _Phase.HEAD

    def on_headers_complete(self) -> None:
        self._phase = _Phase.BODY
        self._head_bytes = 0
        self._heads_completed += 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.guard.busy(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = _Phase.BUSY
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or not (self.cycle is None or self.cycle.response_complete):
            return  # closing, or a pipelined request is now in progress
        if self._phase is _Phase.BUSY:
            self._phase = _Phase.WAITING
        if self._phase in _RECEIVING_HEAD:
            self.guard.waiting(self)

    # Server

    def shutdown(self) -> None:
        """Graceful shutdown: a request still arriving is refused now; responses in progress finish."""
        if self._phase is _Phase.CLOSING:
            self.transport.close()
            return
        no_response = self.cycle is None or self.cycle.response_complete
        if (self._phase is _Phase.HEAD and no_response) or (
            self._phase is _Phase.BODY and self.cycle is not None and not self.cycle.response_started
        ):
            self._reject(
                503,
                "draining",
                "The server is shutting down. Retry the request.",
                "shutting_down",
                log="shutting down: requests still being received are refused with 503",
                retry_after=True,
            )
            return
        super().shutdown()

    def evict(self) -> None:
        """Closed to make room for a new connection (this one had no request in progress)."""
        if self._phase is _Phase.CLOSING:
            self.transport.close()
            return
        message = "connection limit reached: the longest-waiting idle or incomplete connections are closed"
        if self._phase is _Phase.HEAD:
            self._reject(
                503,
                "connection_limit",
                "The server is at its connection limit. Retry the request.",
                "overloaded",
                log=message,
                retry_after=True,
            )
        else:
            self._close()
            self.guard.rejected("connection_limit", message)

    # Timeouts

    def _head_timed_out(self) -> None:
        self._head_timer = None
        timeout = self.guard.header_timeout_s
        if self._phase is _Phase.WAITING:
            self._close()  # nothing was sent: there is no one to answer
            self.guard.rejected("header_timeout", _HEAD_TIMEOUT_LOG)
        elif self._phase is _Phase.HEAD:
            self._reject(
                408,
                "header_timeout",
                f"Request headers not received within {timeout:g} s.",
                "request_timeout",
                log=_HEAD_TIMEOUT_LOG,
            )

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self._phase is not _Phase.BODY:
            return
        log = "requests whose body took longer than BODY_TIMEOUT_S refused with 408"
        if self.cycle is not None and self.cycle.response_started:
            self._close()
            self.guard.rejected("body_timeout", log)
            return
        self._reject(
            408,
            "body_timeout",
            f"Request body not received within {self.guard.body_timeout_s:g} s.",
            "request_timeout",
            log=log,
        )

    # Answers

    def _reject(
        self,
        status: int,
        reason: str,
        message: str,
        code: str,
        *,
        log: str,
        retry_after: bool = False,
        error_type: str | None = None,
    ) -> None:
        """Answer with an OpenAI-shaped error and count it, then close (lingering); the app's own
        answer, if it was running, is dropped."""
        error = OpenAIError(status, message, code=code, type=error_type)
        body = error.body().model_dump_json().encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        head.append(b"connection: close\r\n\r\n")
        self._cancel_timers()
        self._drop_request()
        self._phase = _Phase.CLOSING
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.flow.resume_reading()
            self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)
            self.guard.closing(self)
        else:
            self.transport.close()
        self.guard.rejected(reason, log)

    def _close(self) -> None:
        self._cancel_timers()
        self._drop_request()
        self.transport.close()

    def _drop_request(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            # As `connection_lost` will: a handler waiting for the body gets `http.disconnect` and
            # whatever it sends is dropped.
            self.cycle.disconnected = True
            self.cycle.message_event.set()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._linger_timer = None


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedHttpToolsProtocol]:
    """The protocol class of one worker, bound to its guard (uvicorn's `Config(http=...)`)."""

    class WorkerHttpProtocol(GuardedHttpToolsProtocol):
        pass

    WorkerHttpProtocol.guard = guard
    return WorkerHttpProtocol


def raise_fd_limit(target: int) -> int:
    """Raise this process's soft open-files limit towards `target`, never above the hard limit (an
    unprivileged process may raise its soft limit up to it); returns the soft limit now in force.
    Workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            logger.warning("the open-files limit cannot be raised", extra={"soft": soft, "wanted": wanted})
    return soft


def fd_limit() -> int | None:
    """This process's soft open-files limit (None: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_cap(max_connections: int) -> int:
    """`MAX_CONNECTIONS`, lowered to fit this process's open-files limit (less `FD_RESERVE`)."""
    soft = fd_limit()
    if soft is None:
        return max_connections
    return max(1, min(max_connections, soft - FD_RESERVE))
