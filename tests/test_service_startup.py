"""Starting and stopping the real service (`python -m service`, what `make serve` runs).

- The log is JSON from the first line to the last, gunicorn's own lines included; each start-up fact
  is logged once, not once per worker; the URL (with the playground and docs links) is logged once
  the socket is bound; credentials in a query string never reach the access log.
- A busy port is one clear line and exit status 1, without gunicorn's retries.
- Ctrl-C drains open streams like SIGTERM.
- No gunicorn control socket is shared between instances; the open-files limit is raised at start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil

from service.observability.logging import redact_query
from tests.helpers.probes import wait_until, worker_pids
from tests.helpers.server import REPO_ROOT, free_port, service_env, start_service

PRLIMIT = shutil.which("prlimit")
QUESTION = [{"role": "user", "content": "What is AutoGen?"}]


def _records(logs: str) -> list[dict[str, object]]:
    lines = [line for line in logs.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line: one JSON record


def test_the_start_up_log_is_json_and_says_each_fact_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # A low soft open-files limit that may be raised: the service raises it (FD_LIMIT, up to the hard one).
    prefix = [PRLIMIT, "--nofile=256:4096"] if PRLIMIT else []
    service = start_service(tmp_path, WORKERS="2", HOME=str(home), XDG_RUNTIME_DIR="", prefix=prefix)
    with service:
        assert wait_until(lambda: service.logs().count("Application startup complete.") == 2, 60)
        workers = worker_pids(service.proc.pid)
        secret = "sk-in-the-query-string"
        response = httpx.get(f"{service.base_url}/v1/models?api_key={secret}&limit=2", timeout=10)
        assert response.status_code == 200
        if PRLIMIT:
            for pid in workers:
                assert psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE) == (4096, 4096)
    records = _records(service.logs())
    messages = [str(record["message"]) for record in records]
    for fact in (
        "API KEY AUTHENTICATION IS OFF",
        "protection settings",
        "workflows loaded",
        "garbage collector tuned",
        "listening on ",
    ):
        assert sum(message.startswith(fact) for message in messages) == 1, (fact, messages)
    assert sum(message.startswith("Booting worker") for message in messages) == 2  # one per worker
    repeated = ("Listening at", "Control socket", "Started server process", "Waiting for application startup")
    assert not any(message.startswith(repeated) for message in messages), messages

    listening = next(record for record in records if str(record["message"]).startswith("listening on "))
    url = f"http://127.0.0.1:{service.port}"
    assert (listening["url"], listening["playground"], listening["docs"]) == (url, f"{url}/", f"{url}/docs")
    assert listening["logger"] == "service" and listening["pid"] == service.proc.pid
    settings = next(record for record in records if record["message"] == "protection settings")
    if PRLIMIT:
        assert settings["fd_limit"] == 4096
    assert {record["logger"] for record in records} >= {"gunicorn.error", "uvicorn.error", "service"}

    access = [record for record in records if record["logger"] == "uvicorn.access"]
    assert any("/v1/models?api_key=***&limit=2" in str(record["message"]) for record in access)
    assert secret not in service.logs()
    # gunicorn 27 opens ~/.gunicorn/gunicorn.ctl by default, one path for every instance of a user.
    assert not (home / ".gunicorn").exists()


def test_a_busy_port_is_one_clear_line_and_exit_status_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        env = service_env(tmp_path, PORT=str(port))
        result = subprocess.run(
            [sys.executable, "-m", "service"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=15,  # gunicorn alone retried for five seconds, logging "Connection in use" each time
        )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR"
    assert record["message"] == (
        f"cannot listen on 127.0.0.1:{port}: the port is already in use (stop the other server or set PORT)"
    )


def test_ctrl_c_drains_open_streams_like_sigterm(tmp_path: Path) -> None:
    service = start_service(tmp_path, WORKERS="2", DEMO_LLM_TOKEN_MS="40", DRAIN_DELAY_S="0.5")
    streams: list[list[str]] = []
    started = [threading.Event() for _ in range(8)]

    def stream(begun: threading.Event) -> None:
        lines: list[str] = []
        try:
            body = {"model": "demo-team", "stream": True, "messages": QUESTION}
            with httpx.stream("POST", f"{service.base_url}/v1/chat/completions", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    begun.set()
                    if line:
                        lines.append(line)
        except httpx.HTTPError as exc:
            lines.append(f"error: {exc!r}")
        finally:
            begun.set()
            streams.append(lines)

    with service:
        threads = [threading.Thread(target=stream, args=(begun,)) for begun in started]
        for thread in threads:
            thread.start()
        assert all(begun.wait(30) for begun in started)
        # A terminal sends SIGINT to the whole foreground process group: the master and its workers.
        os.killpg(service.proc.pid, signal.SIGINT)
        for thread in threads:
            thread.join(60)
        assert service.proc.wait(60) == 0
    cut = [lines[-2:] for lines in streams if not lines or lines[-1] != "data: [DONE]"]
    assert len(streams) == 8 and not cut, cut
    assert not any('"error"' in line for lines in streams for line in lines)
    logs = service.logs()
    assert "draining: /readyz answers 503" in logs and "Quick shutdown" not in logs


def test_credentials_in_a_query_string_are_redacted() -> None:
    assert redact_query("/v1/models?api_key=sk-1&limit=2") == "/v1/models?api_key=***&limit=2"
    assert redact_query("/x?X-API-Key=a&access_token=b&key=c&signature=d") == (
        "/x?X-API-Key=***&access_token=***&key=***&signature=***"
    )
    assert redact_query("/x?monkey_business=1&model=echo&keys") == "/x?monkey_business=1&model=echo&keys"
    assert redact_query("/v1/models") == "/v1/models"
