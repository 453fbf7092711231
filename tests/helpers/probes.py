"""Looking into a running service from a test: its metrics (total and per worker) and its workers."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from prometheus_client.multiprocess import MultiProcessCollector

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(base_url: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` (a full sample name, e.g. `..._total`) matching `labels`."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match["name"] != name:
            continue
        found = dict(_LABEL.findall(match["labels"] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match["value"])
    return total


def requests_by_worker(metrics_dir: Path) -> dict[int, dict[str, float]]:
    """`autogen_requests_total` by outcome for each worker pid, read from its own multiprocess file."""
    result: dict[int, dict[str, float]] = {}
    for path in sorted(metrics_dir.glob("counter_*.db")):
        pid = int(path.stem.split("_")[1])
        outcomes: dict[str, float] = defaultdict(float)
        for family in MultiProcessCollector.merge([str(path)], accumulate=True):  # type: ignore[no-untyped-call]
            if family.name != "autogen_requests":
                continue
            for sample in family.samples:
                if sample.name == "autogen_requests_total":
                    outcomes[sample.labels["outcome"]] += sample.value
        result[pid] = dict(outcomes)
    return result


def workers_that_served(metrics_dir: Path) -> int:
    """How many workers have answered at least one chat request."""
    return sum(1 for outcomes in requests_by_worker(metrics_dir).values() if sum(outcomes.values()))


def send_until_workers_served(
    send_batch: Callable[[], list[int]], metrics_dir: Path, workers: int, max_batches: int = 20
) -> list[int]:
    """Statuses of `send_batch()` calls, repeated until `workers` workers have each served a request.

    Which worker accepts a connection is the kernel's choice: under a light load one idle worker
    can win every `accept`, so a fixed number of requests does not guarantee both are exercised.
    """
    statuses: list[int] = []
    for _ in range(max_batches):
        statuses += send_batch()
        if workers_that_served(metrics_dir) >= workers:
            return statuses
    raise AssertionError(f"{len(statuses)} requests reached fewer than {workers} workers")


def worker_pids(master_pid: int) -> set[int]:
    """The gunicorn workers of a master (its direct children)."""
    try:
        return {child.pid for child in psutil.Process(master_pid).children()}
    except psutil.NoSuchProcess:
        return set()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `condition` until it holds or `timeout` passes (bounded waiting, never a timed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
