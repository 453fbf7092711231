"""`autogen-service`: serve the app under gunicorn with uvicorn workers."""

from __future__ import annotations

import os
import sys
import tempfile

from service.config import SettingsError, load_settings


def main() -> None:
    """Validate the settings, prepare the metrics directory, then exec gunicorn."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"autogen-service: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
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
        "service.app:create_app()",
    ]
    print(
        f"autogen-service: http://{settings.host}:{settings.port} ({settings.workers} workers)",
        file=sys.stderr,
    )
    os.execv(sys.executable, args)  # noqa: S606 (replace this process with gunicorn)


if __name__ == "__main__":
    main()
