"""What a flood of `/metrics` scrapers costs the API: authenticated chat latency with and without them.

Against a running service (any tree: the baseline's too): `requests` sequential authenticated chat
completions alone, then the same while `scrapers` clients scrape `/metrics` in a loop from a child
process (so the client side of the flood does not share the measuring process's GIL). Alone and
flooded alternate over `rounds` rounds; the report gives median latencies, their ratio and how many
scrapes were answered.

Usage:
  python -m loadtests.metrics_flood --url http://127.0.0.1:8000 --api-key K [--metrics-token T]
  (the child: python -m loadtests.metrics_flood scrape URL SCRAPERS SECONDS [TOKEN])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import httpx
import psutil

QUESTION = [{"role": "user", "content": "How are you today?"}]
# A flood lasts at least MIN_FLOOD_S (chat requests go on until then) and at most MAX_FLOOD_S.
MIN_FLOOD_S = 3.0
MAX_FLOOD_S = 60.0


@dataclass
class FloodReport:
    scrapers: int
    requests_per_round: int
    rounds: int
    median_alone_ms: float
    median_flooded_ms: float
    p90_alone_ms: float
    p90_flooded_ms: float
    ratio: float
    scrapes: int
    scrape_errors: int
    scrapes_per_s: float
    service_cpu_ms_per_scrape: float | None = None

    def text(self) -> str:
        cpu = (
            f"; service CPU {self.service_cpu_ms_per_scrape:.2f} ms per scrape"
            if self.service_cpu_ms_per_scrape is not None
            else ""
        )
        return (
            f"chat latency median {self.median_alone_ms:.1f} ms alone, {self.median_flooded_ms:.1f} ms "
            f"with {self.scrapers} scrapers (ratio {self.ratio:.2f}x; p90 {self.p90_alone_ms:.1f} -> "
            f"{self.p90_flooded_ms:.1f} ms); {self.scrapes} scrapes answered ({self.scrapes_per_s:.0f}/s), "
            f"{self.scrape_errors} failed; {self.rounds} rounds of {self.requests_per_round} requests{cpu}"
        )


async def _scrape(url: str, scrapers: int, seconds: float, token: str | None, counts: dict[str, int]) -> None:
    """`scrapers` clients scraping in a loop for `seconds`; `counts` is updated as answers come, so a
    cancelled flood still says what it did."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + seconds

    async def loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            try:
                response = await client.get(f"{url}/metrics", headers=headers)
                counts["answered" if response.status_code == 200 else "failed"] += 1
                if counts["answered"] == scrapers:  # every client is in: the flood is on
                    print(json.dumps(counts), flush=True)
            except httpx.HTTPError:
                counts["failed"] += 1

    async with httpx.AsyncClient(timeout=15) as client:
        await asyncio.gather(*(loop(client) for _ in range(scrapers)))


def _chat(client: httpx.Client, model: str) -> float:
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json={"model": model, "messages": QUESTION})
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


def measure(
    url: str,
    api_key: str,
    *,
    metrics_token: str | None = None,
    scrapers: int = 8,
    requests: int = 30,
    rounds: int = 3,
    model: str = "echo",
    service_pid: int | None = None,
) -> FloodReport:
    """Alone / flooded rounds, alternated; see the module docstring. With `service_pid` (the
    gunicorn master), the CPU its workers spent per scrape is reported too (chat requests of the
    flooded phases included: a small share next to the scrapes)."""
    alone: list[float] = []
    flooded: list[float] = []
    answered = failed = 0
    flood_seconds = 0.0
    flood_cpu_s = 0.0
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for _ in range(3):
            _chat(client, model)  # warm-up: connections, first-request paths
        for _ in range(rounds):
            alone += [_chat(client, model) for _ in range(requests)]
            command = [sys.executable, "-m", "loadtests.metrics_flood", "scrape", url, str(scrapers), "3600"]
            child = subprocess.Popen(
                [*command, *([metrics_token] if metrics_token else [])], stdout=subprocess.PIPE
            )
            try:
                assert child.stdout is not None
                # The counts once every client is in (or EOF if the child failed).
                at_start = json.loads(child.stdout.readline() or b'{"answered": 0, "failed": 0}')
                cpu_before = _tree_cpu_s(service_pid)
                started = time.monotonic()
                done = 0
                while (done < requests or time.monotonic() - started < MIN_FLOOD_S) and (
                    time.monotonic() - started < MAX_FLOOD_S
                ):
                    flooded.append(_chat(client, model))
                    done += 1
                flood_seconds += time.monotonic() - started
            finally:
                child.terminate()
                out, _ = child.communicate(timeout=30)
                flood_cpu_s += _tree_cpu_s(service_pid) - cpu_before
            counts = json.loads(out.splitlines()[-1] if out else b'{"answered": 0, "failed": 0}')
            answered += counts["answered"] - at_start["answered"]
            failed += counts["failed"] - at_start["failed"]
    median_alone = statistics.median(alone)
    median_flooded = statistics.median(flooded)
    return FloodReport(
        scrapers=scrapers,
        requests_per_round=requests,
        rounds=rounds,
        median_alone_ms=median_alone,
        median_flooded_ms=median_flooded,
        p90_alone_ms=statistics.quantiles(alone, n=10)[-1],
        p90_flooded_ms=statistics.quantiles(flooded, n=10)[-1],
        ratio=median_flooded / median_alone,
        scrapes=answered,
        scrape_errors=failed,
        scrapes_per_s=answered / flood_seconds if flood_seconds else 0.0,
        service_cpu_ms_per_scrape=flood_cpu_s * 1000 / answered if service_pid and answered else None,
    )


def _tree_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process and its children (the workers), 0 without a pid."""
    if pid is None:
        return 0.0
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _scrape_child(argv: list[str]) -> None:
    """Scrape until SIGTERM (or `seconds`), then print the counts as JSON."""
    url, scrapers, seconds = argv[0], int(argv[1]), float(argv[2])
    token = argv[3] if len(argv) > 3 else None
    counts = {"answered": 0, "failed": 0}

    async def run() -> None:
        task = asyncio.ensure_future(_scrape(url, scrapers, seconds, token, counts))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    print(json.dumps(counts))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "scrape":
        _scrape_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--metrics-token")
    parser.add_argument("--scrapers", type=int, default=8)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="echo")
    parser.add_argument("--pid", type=int, help="the service's master process: report its CPU per scrape")
    args = parser.parse_args()
    report = measure(
        args.url,
        args.api_key,
        metrics_token=args.metrics_token,
        scrapers=args.scrapers,
        requests=args.requests,
        rounds=args.rounds,
        model=args.model,
        service_pid=args.pid,
    )
    print(report.text())
    print(json.dumps(asdict(report)))


if __name__ == "__main__":
    main()
