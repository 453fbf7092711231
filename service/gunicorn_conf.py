"""gunicorn configuration: uvicorn workers, graceful drain, Prometheus multiprocess hygiene.

Used as `gunicorn -c python:service.gunicorn_conf "service.app:create_app()"` (what the
`autogen-service` command runs). Values come from the same typed settings as the app.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from service.config import load_settings

_settings = load_settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
# uvicorn_worker.UvicornWorker with the streaming drain (readiness 503 at once on SIGTERM, then open
# streams run to [DONE]); see service/protection/worker.py.
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
proc_name = "autogen-service"
# gunicorn's runtime control socket (`gunicornc`: reload, resize, stop) is not used: without this
# every instance binds $HOME/.gunicorn/gunicorn.ctl (one path shared by all instances of a user),
# and in the image, whose user has no writable home, it logs an error at every start.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Empty the Prometheus multiprocess directory before any worker starts."""
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


def child_exit(server: Any, worker: Any) -> None:
    """Keep a dead worker's counters but drop its live gauges (also after a SIGKILL: the master
    replaces the worker and calls this for the old pid)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
