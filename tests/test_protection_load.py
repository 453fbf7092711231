"""Overload and disconnect storms against the real service, and the leak check in-process.

- Overload: 3x `MAX_CONCURRENT_WORKFLOWS` concurrent requests; the excess is refused at once with
  503 + `Retry-After` (never queued), the rest succeed; worker memory stays bounded over rounds.
- Disconnect storm: 50 clients drop mid-stream; afterwards no workflow or stream is left active,
  no thread is left in the workers, and the service serves normally.
- The same storm against uvicorn in this process: no asyncio task is left behind.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn

from service.app import create_app
from tests.helpers.app import make_settings
from tests.helpers.probes import metric, wait_until, worker_pids
from tests.helpers.server import free_port, start_service

QUESTION = [{"role": "user", "content": "What is AutoGen?"}]
SLOTS = 4
STORM = 50


def _timed_request(base_url: str, stream: bool) -> tuple[int, float, dict[str, str], str]:
    """Status, completion time (monotonic), headers and body of one request on its own connection."""
    body = {"model": "demo-team", "messages": QUESTION, "stream": stream}
    with httpx.Client(timeout=60) as client:
        response = client.post(f"{base_url}/v1/chat/completions", json=body)
        return response.status_code, time.monotonic(), dict(response.headers), response.text


def test_overload_is_refused_at_once_and_the_rest_succeed(tmp_path: Path) -> None:
    service = start_service(
        tmp_path, WORKERS="1", MAX_CONCURRENT_WORKFLOWS=str(SLOTS), DEMO_LLM_TOKEN_MS="20"
    )
    with service:
        (worker,) = worker_pids(service.proc.pid)
        rss: list[int] = []
        for round_number, stream in enumerate((False, True, True)):
            with ThreadPoolExecutor(3 * SLOTS) as pool:
                results = list(pool.map(_timed_request, [service.base_url] * 3 * SLOTS, [stream] * 3 * SLOTS))
            ok = [result for result in results if result[0] == 200]
            refused = [result for result in results if result[0] != 200]
            assert len(ok) == SLOTS and len(refused) == 2 * SLOTS, [result[0] for result in results]
            # Refused at once: every refusal was answered before the first accepted run finished.
            assert max(result[1] for result in refused) < min(result[1] for result in ok)
            for status, _, headers, text in refused:
                assert status == 503 and headers["retry-after"] == "1"
                assert json.loads(text)["error"]["code"] == "overloaded"
            for _, _, _, text in ok:
                assert text.rstrip().endswith("data: [DONE]") if stream else "Final answer" in text
            assert wait_until(lambda: metric(service.base_url, "autogen_active_workflows") == 0, 10)
            rss.append(psutil.Process(worker).memory_info().rss)
            assert metric(service.base_url, "autogen_rejected_total", reason="overload") == 2 * SLOTS * (
                round_number + 1
            )
        # Memory stays bounded: repeating the overload does not grow the worker (first round warms up).
        assert rss[-1] - rss[1] < 64 * 1024 * 1024, rss
        assert metric(service.base_url, "autogen_requests_total", outcome="ok") == 3 * SLOTS


async def _drop_mid_stream(base_url: str) -> bool:
    """Open a stream, read until the first content chunk, then hang up. True if it got that far."""
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"model": "demo-team", "messages": QUESTION, "stream": True}
        async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return False
            async for line in response.aiter_lines():
                if '"content":"' in line:
                    return True  # leaving the block closes the connection mid-stream
    return False


async def _storm(base_url: str) -> list[bool]:
    return await asyncio.gather(*(_drop_mid_stream(base_url) for _ in range(STORM)))


def _threads(pids: set[int]) -> int:
    return sum(psutil.Process(pid).num_threads() for pid in pids)


def test_disconnect_storm_leaves_nothing_behind(tmp_path: Path) -> None:
    service = start_service(tmp_path, WORKERS="2", DEMO_LLM_TOKEN_MS="50", MAX_CONCURRENT_WORKFLOWS="64")
    with service:
        workers = worker_pids(service.proc.pid)
        asyncio.run(_storm(service.base_url))  # warm-up: thread pools and caches reach their size
        assert wait_until(lambda: metric(service.base_url, "autogen_active_workflows") == 0, 30)
        threads_before = _threads(workers)
        cancelled_before = metric(service.base_url, "autogen_requests_total", outcome="cancelled")

        assert all(asyncio.run(_storm(service.base_url)))

        assert wait_until(lambda: metric(service.base_url, "autogen_active_workflows") == 0, 30)
        assert metric(service.base_url, "autogen_active_streams") == 0
        cancelled = metric(service.base_url, "autogen_requests_total", outcome="cancelled") - cancelled_before
        assert cancelled == STORM
        assert worker_pids(service.proc.pid) == workers  # no worker crashed or was replaced
        # A leak would be a thread per dropped stream; allow the one executor thread per worker that
        # `/metrics` starts on first use (this test's polling may reach a worker for the first time).
        assert _threads(workers) <= threads_before + len(workers)
        status, _, _, text = _timed_request(service.base_url, stream=True)
        assert status == 200 and text.rstrip().endswith("data: [DONE]")
    assert "Traceback" not in service.logs()


@contextmanager
def _uvicorn_in_thread(app: Any) -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 30)
        yield f"http://127.0.0.1:{port}", loop
    finally:
        server.should_exit = True
        thread.join(30)
        loop.close()


def _task_names(loop: asyncio.AbstractEventLoop) -> list[str]:
    async def names() -> list[str]:
        current = asyncio.current_task()
        return sorted(task.get_name() for task in asyncio.all_tasks() if task is not current)

    return asyncio.run_coroutine_threadsafe(names(), loop).result(10)


def test_disconnect_storm_leaves_no_task_in_the_event_loop() -> None:
    app = create_app(make_settings(demo_llm_token_ms=50, max_concurrent_workflows=64))
    with _uvicorn_in_thread(app) as (base_url, loop):
        assert httpx.get(f"{base_url}/readyz").status_code == 200
        baseline = _task_names(loop)
        threads_before = {thread.ident for thread in threading.enumerate()}
        assert all(asyncio.run(_storm(base_url)))
        metrics = app.state.metrics
        assert wait_until(lambda: metrics.active_workflows._value.get() == 0, 30)
        assert metrics.active_streams._value.get() == 0
        assert wait_until(lambda: _task_names(loop) == baseline, 10), _task_names(loop)
        assert app.state.serving.slots.in_use == 0
        new_threads = [
            thread.name
            for thread in threading.enumerate()
            if thread.ident not in threads_before and thread.is_alive()
        ]
        assert not [name for name in new_threads if not name.startswith("AnyIO worker thread")], new_threads
