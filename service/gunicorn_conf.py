"""gunicorn configuration: uvicorn workers, graceful drain, JSON logs, Prometheus multiprocess hygiene.

Used as `gunicorn -c python:service.gunicorn_conf "service.app:create_app()"` (what the
`autogen-service` command runs, handing over the socket it has already bound). Values come from the
same typed settings as the app.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from service.config import load_settings
from service.protection.connections import raise_fd_limit
from service.protection.install import report_from_master

_settings = load_settings()
logger = logging.getLogger("service")

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
# uvicorn_worker.UvicornWorker with the streaming drain (readiness 503 at once on SIGTERM, then open
# streams run to [DONE]) and the connection limits; see service/protection/worker.py.
worker_class = "service.protection.worker.DrainingUvicornWorker"
graceful_timeout = int(_settings.graceful_timeout_s)
# Streams are long: the worker heartbeat timeout must not kill a busy worker; uvicorn workers
# heartbeat from their event loop, so this only fires when the loop is truly stuck.
timeout = 120
# Above the usual load-balancer idle timeout (60 s), so the LB closes idle connections first.
keepalive = int(_settings.keepalive_s)
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
# gunicorn's own lines in the service's JSON format.
logger_class = "service.observability.logging.GunicornLogger"
proc_name = "autogen-service"
# gunicorn's runtime control socket (`gunicornc`: reload, resize, stop) is not used: without this
# every instance binds $HOME/.gunicorn/gunicorn.ctl (one path shared by all instances of a user),
# and in the image, whose user has no writable home, it logs an error at every start.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Before any worker starts: empty the metrics directory, raise the open-files limit, log the
    settings once for all workers, and make Ctrl-C drain like SIGTERM."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        if path.exists():
            for child in path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        path.mkdir(parents=True, exist_ok=True)
    raise_fd_limit(_settings.fd_limit)
    report_from_master(_settings)
    # gunicorn quits at once on SIGINT; `make serve` users press Ctrl-C and expect open streams to
    # finish. A second Ctrl-C during the drain still quits at once (gunicorn's quick shutdown).
    server.handle_int = server.handle_term


def when_ready(server: Any) -> None:
    """The listener is bound: say where to go."""
    for listener in server.LISTENERS:
        address = listener.sock.getsockname()
        if listener.sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        host, port = address[0], address[1]
        everywhere = host in ("0.0.0.0", "::")
        if everywhere:
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}"
        logger.info(
            f"listening on {url} (playground {url}/, API docs {url}/docs)",
            extra={
                "url": url,
                "playground": f"{url}/",
                "docs": f"{url}/docs",
                "workers": _settings.workers,
                "all_interfaces": everywhere,
            },
        )


def child_exit(server: Any, worker: Any) -> None:
    """Keep a dead worker's counters but drop its live gauges (also after a SIGKILL: the master
    replaces the worker and calls this for the old pid)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
