"""Graceful drain of the real service (gunicorn master + 2 uvicorn workers), and worker crashes.

- SIGTERM to the master with 20 slow streams open: `/readyz` turns 503, then new connections are
  refused, and all 20 streams still end with `data: [DONE]`, complete.
- SIGKILL of a worker: the master replaces it; the dead worker's counters stay in `/metrics` and its
  live gauges are dropped (`mark_process_dead`).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers.probes import metric, wait_until, worker_pids
from tests.helpers.server import start_service

STREAMS = 20
QUESTION = [{"role": "user", "content": "What is AutoGen?"}]


@dataclass
class StreamResult:
    started: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _stream(base_url: str, result: StreamResult) -> None:
    try:
        with httpx.stream(
            "POST",
            f"{base_url}/v1/chat/completions",
            json={"model": "demo-team", "messages": QUESTION, "stream": True},
            timeout=httpx.Timeout(60, connect=10),
        ) as response:
            if response.status_code != 200:
                result.error = f"status {response.status_code}"
                return
            for line in response.iter_lines():
                if not line:
                    continue
                result.lines.append(line)
                if '"content":"' in line and not result.started.is_set():
                    result.started.set()
    except httpx.HTTPError as exc:
        result.error = repr(exc)
    finally:
        result.started.set()
        result.done.set()


def _complete(result: StreamResult) -> bool:
    """Ends with [DONE] after a finishing chunk, every event a chunk (no error event): nothing cut."""
    if result.error or not result.lines or result.lines[-1] != "data: [DONE]":
        return False
    events = [json.loads(line.removeprefix("data: ")) for line in result.lines[:-1]]
    if any("error" in event for event in events):
        return False
    finishing = [event for event in events if event["choices"] and event["choices"][0]["finish_reason"]]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    return (
        len(finishing) == 1
        and finishing[0]["choices"][0]["finish_reason"] == "stop"
        and finishing[0].get("final_answer_agent") == "reviewer"
        and text.startswith("Review:")  # the whole answer: the last agent's text, streamed to its end
    )


NO_ANSWER = -1


def _probe_readyz(base_url: str) -> int | None:
    """The status of `/readyz` on a new connection; None when the connection is refused, `NO_ANSWER`
    when it was accepted but not answered (reset as the listener closed, or a worker still booting).
    """
    try:
        return httpx.get(f"{base_url}/readyz", timeout=2).status_code
    except httpx.ConnectError:
        return None
    except httpx.HTTPError:
        return NO_ANSWER


def test_sigterm_drains_every_open_stream_to_done(tmp_path: Path) -> None:
    service = start_service(
        tmp_path,
        WORKERS="2",
        DEMO_LLM_TOKEN_MS="80",  # ~80 tokens per stream: about 6 s, much longer than the drain delay
        DRAIN_DELAY_S="2",
        GRACEFUL_TIMEOUT_S="60",
    )
    with service:
        results = [StreamResult() for _ in range(STREAMS)]
        threads = [threading.Thread(target=_stream, args=(service.base_url, r), daemon=True) for r in results]
        for thread in threads:
            thread.start()
        assert all(result.started.wait(30) for result in results)
        assert not any(result.error for result in results), [r.error for r in results if r.error]
        assert not any(result.done.is_set() for result in results)

        service.signal(signal.SIGTERM)
        statuses: list[int | None] = []
        assert wait_until(
            lambda: statuses.append(_probe_readyz(service.base_url)) or statuses[-1] is None, 30
        )
        open_when_refused = sum(not result.done.is_set() for result in results)
        # Readiness turned 503 (a probe racing the signal may still see 200 first) while the listener
        # still answered, then connections were refused; never ready again in between. (A probe that
        # reaches the accept queue just as the listener closes is reset, not refused: NO_ANSWER.)
        after_signal = statuses[next(i for i, status in enumerate(statuses) if status != 200) :]
        assert after_signal[0] == 503 and after_signal[-1] is None, statuses
        assert 200 not in after_signal, statuses
        assert open_when_refused > 0  # the drain really overlapped the open streams

        for thread in threads:
            thread.join(60)
        assert service.proc.wait(60) == 0
    incomplete = [(r.error, r.lines[-2:]) for r in results if not _complete(r)]
    assert not incomplete, incomplete
    logs = service.logs()
    assert "draining: /readyz answers 503" in logs
    assert "timeout graceful shutdown exceeded" not in logs and "Traceback" not in logs


def test_new_chat_requests_are_refused_while_draining(tmp_path: Path) -> None:
    service = start_service(tmp_path, WORKERS="1", DRAIN_DELAY_S="3", GRACEFUL_TIMEOUT_S="30")
    with service, httpx.Client(base_url=service.base_url, timeout=10) as client:
        assert client.get("/readyz").status_code == 200  # a kept-alive connection, opened before SIGTERM
        service.signal(signal.SIGTERM)
        assert wait_until(lambda: client.get("/readyz").status_code == 503, 2)
        refused = httpx.post(
            f"{service.base_url}/v1/chat/completions", json={"model": "echo", "messages": QUESTION}, timeout=5
        )
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
        assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
        page = httpx.get(f"{service.base_url}/metrics", timeout=2).text
        assert 'autogen_rejected_total{reason="draining"} 1.0' in page
        assert httpx.get(f"{service.base_url}/healthz", timeout=2).status_code == 200  # liveness unaffected
        assert service.proc.wait(30) == 0


def test_a_killed_worker_is_replaced_and_its_metrics_are_kept(tmp_path: Path) -> None:
    service = start_service(tmp_path, WORKERS="1", DEMO_LLM_TOKEN_MS="200")
    with service:
        for _ in range(3):
            response = httpx.post(
                f"{service.base_url}/v1/chat/completions",
                json={"model": "echo", "messages": QUESTION},
                timeout=30,
            )
            assert response.status_code == 200
        (victim,) = worker_pids(service.proc.pid)
        # A stream is open on the worker when it dies: its live gauge must not outlive it.
        result = StreamResult()
        thread = threading.Thread(target=_stream, args=(service.base_url, result), daemon=True)
        thread.start()
        assert result.started.wait(30)
        assert metric(service.base_url, "autogen_active_streams") == 1

        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: len(worker_pids(service.proc.pid) - {victim}) == 1, 30)
        assert wait_until(lambda: _probe_readyz(service.base_url) == 200, 30)
        thread.join(30)
        assert result.error is not None  # that one stream was lost with its process, as expected

        assert metric(service.base_url, "autogen_requests_total", outcome="ok") == 3
        assert metric(service.base_url, "autogen_active_streams") == 0
        assert metric(service.base_url, "autogen_active_workflows") == 0
        after = httpx.post(
            f"{service.base_url}/v1/chat/completions",
            json={"model": "echo", "messages": QUESTION},
            timeout=30,
        )
        assert after.status_code == 200
        assert metric(service.base_url, "autogen_requests_total", outcome="ok") == 4
