"""No work at import time: no threads, no tracer provider, no metric files, no logging set-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.server import REPO_ROOT

PROBE = """
import logging, os, threading, pkgutil, importlib
import service
for module in pkgutil.walk_packages(service.__path__, "service."):
    if module.name not in ("service.__main__", "service.gunicorn_conf"):
        importlib.import_module(module.name)
from opentelemetry import trace
assert threading.active_count() == 1, threading.enumerate()
assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
assert not logging.getLogger().handlers
assert not os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
print("clean")
"""


def test_importing_every_module_does_no_work(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "clean", result.stderr[-2000:]
