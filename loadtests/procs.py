"""Process helpers shared by the bench, the Locust campaign runner and the tests.

Start servers in their own session (so the whole tree can be stopped by its process-group id), wait for them
to answer, and read what they cost from ``/proc``: CPU (utime+stime, plus reaped children) summed over the
process tree, and VmRSS/VmHWM per process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loadtests.stopping import StopOnExit

REPO_ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def venv_bin(name: str) -> str:
    """A console script next to the running interpreter (the project's .venv)."""
    return str(Path(sys.executable).parent / name)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int, include_children: bool = True) -> float:
    """utime+stime of one process (+ cutime+cstime: its reaped children), in seconds; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
    ticks = int(fields[11]) + int(fields[12])
    if include_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a whole process tree (live processes + everything they reaped)."""
    return sum(cpu_seconds(p) for p in process_tree(pid))


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of one process, in kB."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key = line.split(":", 1)[0]
                if key in out:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def wait_http_ok(url: str, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: str = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s ({last})")


@dataclass
class ServerProcess(StopOnExit):
    """A server started in its own session; ``stop()`` ends its whole process group."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path | None = None
    _log: IO[bytes] | None = None
    _stopped: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        """Worker pids: the children of a gunicorn master, or the process itself."""
        tree = process_tree(self.pid)
        return tree[1:] or tree

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def peak_rss_kb_per_worker(self) -> int:
        return max((memory_kb(p)["VmHWM"] for p in self.workers()), default=0)

    def rss_kb_per_worker(self) -> int:
        return max((memory_kb(p)["VmRSS"] for p in self.workers()), default=0)

    def rss_kb_total(self) -> int:
        return sum(memory_kb(p)["VmRSS"] for p in process_tree(self.pid))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        # whatever is left in the group (workers of a master that died first)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail_log(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _spawn(
    name: str, cmd: list[str], env: Mapping[str, str], log_path: Path | None, stdout_pipe: bool = False
) -> tuple[subprocess.Popen[bytes], IO[bytes] | None]:
    log: IO[bytes] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed by ServerProcess.stop
    sink: Any = log if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE if stdout_pipe else sink,
        stderr=sink,
        env=dict(env),
        cwd=str(REPO_ROOT),
        start_new_session=True,
    )
    return proc, log


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _read_port_line(proc: subprocess.Popen[bytes], prefix: str, timeout: float) -> int:
    import threading

    assert proc.stdout is not None
    box: list[bytes] = []
    t = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    t.start()
    t.join(timeout)
    line = box[0].decode().strip() if box else ""
    if not line.startswith(prefix):
        raise RuntimeError(f"no {prefix} line (got {line!r}, exit code {proc.poll()})")
    return int(line.split("=", 1)[1])


def start_fake_llm(log_path: Path | None = None, timeout: float = 20.0, **opts: Any) -> ServerProcess:
    """The fake LLM as a ``ServerProcess`` (options: ``ttft_ms``, ``token_ms``, ``tokens``, ...)."""
    cmd = [sys.executable, "-m", "loadtests.fake_llm", "--port", "0"]
    for key, value in opts.items():
        cmd.append(f"--{key.replace('_', '-')}={value}")
    proc, log = _spawn("fake-llm", cmd, _base_env(), log_path, stdout_pipe=True)
    try:
        port = _read_port_line(proc, "FAKE_LLM_PORT=", timeout)
    except Exception:
        ServerProcess("fake-llm", proc, 0, log_path, log).stop()
        raise
    server = ServerProcess("fake-llm", proc, port, log_path, log)
    wait_http_ok(f"{server.url}/healthz", timeout, proc)
    return server


def start_floor(
    ttft_ms: float, token_ms: float, tokens: int, upstream: str | None, log_path: Path | None = None
) -> ServerProcess:
    cmd = [
        sys.executable,
        "-m",
        "loadtests.floor",
        "--port",
        "0",
        f"--ttft-ms={ttft_ms}",
        f"--token-ms={token_ms}",
        f"--tokens={tokens}",
    ]
    if upstream:
        cmd.append(f"--upstream={upstream}")
    proc, log = _spawn("floor", cmd, _base_env(), log_path, stdout_pipe=True)
    try:
        port = _read_port_line(proc, "FLOOR_PORT=", 30)
    except Exception:
        ServerProcess("floor", proc, 0, log_path, log).stop()
        raise
    server = ServerProcess("floor", proc, port, log_path, log)
    wait_http_ok(f"{server.url}/healthz", 30, proc)
    return server


def service_command() -> list[str]:
    script = venv_bin("autogen-service")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "service"]


def spawn_service(
    name: str,
    env_overrides: Mapping[str, str],
    workers: int = 1,
    log_path: Path | None = None,
    port: int | None = None,
) -> ServerProcess:
    """Start ``autogen-service`` (gunicorn + uvicorn workers) on a free port; call ``wait_ready()`` next."""
    port = port or free_port()
    env = _base_env()
    for key in ("API_KEYS", "API_KEYS_FILE", "RATE_LIMIT", "LLM_BASE_URL", "LLM_API_KEY", "LLM_MODEL"):
        env.pop(key, None)
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix=f"bench-{name}-prom-"),
            "OTEL_TRACES_EXPORTER": "none",
            "GRACEFUL_TIMEOUT_S": "5",
            # empty values beat a stray .env file in the working directory
            "API_KEYS": "",
            "RATE_LIMIT": "",
        }
    )
    env.update(env_overrides)
    proc, log = _spawn(name, service_command(), env, log_path)
    return ServerProcess(name, proc, port, log_path, log)


def wait_ready(server: ServerProcess, timeout: float = 90.0) -> ServerProcess:
    try:
        wait_http_ok(f"{server.url}/readyz", timeout, server.proc)
    except Exception as exc:
        tail = server.tail_log()
        server.stop()
        raise RuntimeError(f"{server.name} did not become ready: {exc}\n{tail}") from exc
    return server


def start_service(
    name: str,
    env_overrides: Mapping[str, str],
    workers: int = 1,
    log_path: Path | None = None,
    timeout: float = 90.0,
) -> ServerProcess:
    return wait_ready(spawn_service(name, env_overrides, workers, log_path), timeout)
