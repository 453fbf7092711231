"""The gunicorn worker: `uvicorn_worker.UvicornWorker` plus a graceful drain for streaming.

On SIGTERM (gunicorn sends it to every worker when the master gets SIGTERM):

1. at once, the app's `Lifecycle` starts draining: `/readyz` answers 503 and new chat requests
   get 503 + `Connection: close`;
2. for `DRAIN_DELAY_S` the worker still accepts connections, so probes and load balancers see the
   503 instead of a refused connection;
3. then uvicorn stops accepting (new connections are refused) and waits for the open connections:
   every stream runs to `data: [DONE]`. uvicorn's own graceful timeout is set just below
   gunicorn's `graceful_timeout`, so a stream still open then is ended by the worker (which then
   runs the app's shutdown) rather than by the master's SIGKILL.

SIGINT (Ctrl-C) drains like SIGTERM; a second SIGINT, like SIGQUIT (gunicorn's quick shutdown),
skips the delay and the wait.

Connections are served by `GuardedHttpToolsProtocol` (see `connections.py`): bounded request heads,
head and body deadlines, a connection cap, and no wait on shutdown for a client still uploading.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from service.app_state import find
from service.config import load_settings
from service.lifecycle import LIFECYCLE, SHUTDOWN_MARGIN_S
from service.observability.logging import WorkerStartupFilter
from service.observability.metrics import METRICS, ServiceMetrics
from service.protection.connections import ConnectionGuard, connection_cap, guarded_protocol

logger = logging.getLogger("service.drain")


# A terminal's Ctrl-C reaches the master and its workers together, and the master then sends SIGTERM:
# signals this close to the first one are the same request to stop, not a second Ctrl-C.
SAME_STOP_S = 1.0


class DrainingServer(Server):
    """A uvicorn `Server` whose exit starts the app's drain and keeps accepting for `drain_delay_s`."""

    def __init__(
        self,
        config: Config,
        on_drain: Callable[[], None],
        drain_delay_s: float,
        on_started: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self._on_drain = on_drain
        self._drain_delay_s = drain_delay_s
        self._on_started = on_started
        self._graceful = False
        self._stop_requested_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if not self.should_exit:
            self._graceful = sig in (signal.SIGTERM, signal.SIGINT)
            self._stop_requested_at = now
            self._on_drain()
            # uvicorn re-raises the signal once it has stopped: end as after SIGTERM (gunicorn logs a
            # worker ended by SIGINT as a warning).
            sig = signal.SIGTERM if sig == signal.SIGINT else sig
        elif self._stop_requested_at is not None and now - self._stop_requested_at < SAME_STOP_S:
            return
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        self._on_started()

    def quick_exit(self) -> None:
        self._on_drain()
        self.should_exit = True
        self.force_exit = True

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        if self._graceful and self._drain_delay_s > 0 and not self.force_exit:
            logger.info(
                "draining: /readyz answers 503; the listener closes after the drain delay",
                extra={"drain_delay_s": self._drain_delay_s},
            )
            deadline = time.monotonic() + self._drain_delay_s
            # Polls the flags the signal handlers set, as uvicorn's own main loop does.
            while time.monotonic() < deadline and not self.force_exit:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        logger.info(
            "draining: no new connections; waiting for the open ones",
            extra={"connections": len(self.server_state.connections)},
        )
        await super().shutdown(sockets)


class DrainingUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """`uvicorn_worker.UvicornWorker` with the drain and the connection limits of the module docstring."""

    # No WebSocket routes: an upgrade request is served as plain HTTP (and refused by the routes).
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": "httptools",
        "ws": "none",
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = load_settings()
        self.drain_delay_s = settings.drain_delay_s
        graceful = float(self.cfg.graceful_timeout)
        self.config.timeout_graceful_shutdown = max(1, int(graceful - self.drain_delay_s - SHUTDOWN_MARGIN_S))
        self.connection_guard = ConnectionGuard.from_settings(
            settings, self._metrics, connection_cap(settings.max_connections)
        )
        self.config.http = guarded_protocol(self.connection_guard)
        # The first worker of a start logs the start-up facts; its siblings would only repeat them.
        self.startup_log = WorkerStartupFilter(sibling=1 < self.age <= self.cfg.workers)

    def init_process(self) -> None:
        self.startup_log.install()
        super().init_process()

    def _metrics(self) -> ServiceMetrics | None:
        return find(self.wsgi, METRICS)

    def _start_draining(self) -> None:
        lifecycle = find(self.wsgi, LIFECYCLE)
        if lifecycle is not None:
            lifecycle.start_draining()

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(
            self.config, self._start_draining, self.drain_delay_s, on_started=self.startup_log.done
        )
        asyncio.get_running_loop().add_signal_handler(signal.SIGQUIT, server.quick_exit)
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
