"""`autogen-service`: serve the app under gunicorn with uvicorn workers.

The listening socket is bound here, before gunicorn starts, and handed to it (`--bind fd://N`): a
busy or unusable address is one clear log line and exit status 1 at once (gunicorn itself would
retry for five seconds, logging each attempt). Every line is JSON, as the service's own.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import tempfile
from typing import NoReturn

from service.config import SettingsError, load_settings

# gunicorn's default listen backlog.
BACKLOG = 2048

logger = logging.getLogger("service.cli")


def _fatal(message: str, status: int) -> NoReturn:
    """One JSON line on stderr, then exit (the formatter's imports are paid only on this path)."""
    from service.observability.logging import ServiceJsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ServiceJsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    logger.error(message)
    raise SystemExit(status)


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket as gunicorn would make it (address reuse; IPv6 for an IPv6 host)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=BACKLOG)
    listener.set_inheritable(True)
    return listener


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    where = f"cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}: the port is already in use (stop the other server or set PORT)"
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges; set PORT)"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return f"{where}: no such local address (set HOST)"
    return f"{where}: {exc.strerror or exc}"


def main() -> None:
    """Validate the settings, bind the socket, prepare the metrics directory, then exec gunicorn."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        _fatal(str(exc), 2)
    try:
        listener = bind_listener(settings.host, settings.port)
    except OSError as exc:
        _fatal(_bind_failure(settings.host, settings.port, exc), 1)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several workers need multiprocess metrics; a private directory when none is given.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="autogen-metrics-")
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:service.gunicorn_conf",
        "--bind",
        f"fd://{listener.fileno()}",
        "service.app:create_app()",
    ]
    os.execv(sys.executable, args)  # noqa: S606 (replace this process with gunicorn)


if __name__ == "__main__":
    main()
