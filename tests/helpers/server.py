"""Start the real service (gunicorn + uvicorn workers, via `python -m service`) for a test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from loadtests.stopping import StopOnExit, terminate

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def is_ready(base_url: str) -> bool:
    """Whether the service at `base_url` answers `/readyz` with 200 (within a second)."""
    try:
        return httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class ServiceProcess(StopOnExit):
    """A running service; `base_url` is `http://127.0.0.1:<port>`; logs go to `log_path`."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        startup_timeout: float = 60.0,
        command: list[str] | None = None,
    ) -> None:
        self.port = int(env["PORT"])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "service"],
            env=env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(startup_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            if is_ready(self.base_url):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"service not ready in {timeout}s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> None:
        terminate(self.proc, timeout, kill_group=True)
        self._log.close()


def service_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A clean environment for the service: a free port, its own metrics dir, no stray settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLM_", "DEMO_LLM_", "API_KEYS", "RATE_LIMIT", "OTEL_", "WORKFLOW"))
    }
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir(exist_ok=True)
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "WORKERS": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "DATA_DIR": str(tmp_path / "data"),  # the Responses API's SQLite state store
            "OTEL_TRACES_EXPORTER": "none",
            "PYTHONUNBUFFERED": "1",
            # Tests read /metrics right after what they count: no page shared between scrapes.
            "METRICS_CACHE_S": "0",
        }
    )
    env.update(overrides)
    return env


def start_service(
    tmp_path: Path, name: str = "service", prefix: Sequence[str] = (), **overrides: str
) -> ServiceProcess:
    """`prefix` runs the service through a command that execs it (`prlimit ...`, `unshare ...`)."""
    command = [*prefix, sys.executable, "-m", "service"] if prefix else None
    return ServiceProcess(service_env(tmp_path, **overrides), tmp_path / f"{name}.log", command=command)
