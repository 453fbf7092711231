"""What tracing and metrics cost per request: throughput and CPU with and without them.

Runs the real app in-process (httpx ASGI transport, so no network noise) in three modes, in
interleaved rounds in the same process, and reports the ratios against the bare mode:

- `bare`: metrics recording replaced by no-ops, tracing off (the floor for this comparison);
- `metrics`: the default service (Prometheus metrics on, tracing off);
- `metrics+tracing`: metrics on and tracing on, spans batched to an exporter that drops them
  (the cost of making spans, not of shipping them).

Usage: `python -m loadtests.overhead_bench --requests 200 --rounds 5 --json bench-results/overhead.json`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import Counter, Gauge, Histogram

from service.app import create_app
from service.config import Settings

MODES = ("bare", "metrics", "metrics+tracing")


class DroppingExporter(SpanExporter):
    """Accepts spans and drops them: measures span creation, not export I/O."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


@contextmanager
def metrics_disabled() -> Iterator[None]:
    """Make every Prometheus update a no-op (the benchmark's `bare` mode only)."""
    patched: list[tuple[type, str, Callable[..., Any]]] = []
    for cls, names in ((Counter, ("inc",)), (Gauge, ("inc", "dec", "set")), (Histogram, ("observe",))):
        for name in names:
            patched.append((cls, name, getattr(cls, name)))
            setattr(cls, name, lambda self, *args, **kwargs: None)
    try:
        yield
    finally:
        for cls, name, original in patched:
            setattr(cls, name, original)


async def run_mode(mode: str, model: str, requests: int, stream: bool) -> dict[str, float]:
    settings = Settings(_env_file=None, log_level="WARNING")  # type: ignore[call-arg]
    exporter = DroppingExporter()
    processor = BatchSpanProcessor(exporter) if mode == "metrics+tracing" else None
    app = create_app(settings, span_processor=processor)
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "What is AutoGen?"}]}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(5):  # warm-up
                await client.post("/v1/chat/completions", json=body)
            with metrics_disabled() if mode == "bare" else _nothing():
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(requests):
                    response = await client.post("/v1/chat/completions", json=body)
                    assert response.status_code == 200, response.text
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if processor is not None:
        processor.shutdown()
    return {
        "requests_per_s": requests / wall,
        "cpu_ms_per_request": cpu / requests * 1000,
        "spans": exporter.spans,
    }


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def benchmark(model: str, requests: int, rounds: int, stream: bool) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            samples[mode].append(asyncio.run(run_mode(mode, model, requests, stream)))
    summary: dict[str, Any] = {}
    for mode in MODES:
        summary[mode] = {
            "requests_per_s": statistics.median(s["requests_per_s"] for s in samples[mode]),
            "cpu_ms_per_request": statistics.median(s["cpu_ms_per_request"] for s in samples[mode]),
            "spans_per_request": samples[mode][-1]["spans"] / requests,
        }
    bare = summary["bare"]
    for mode in MODES[1:]:
        summary[mode]["throughput_ratio_vs_bare"] = summary[mode]["requests_per_s"] / bare["requests_per_s"]
        summary[mode]["cpu_ratio_vs_bare"] = summary[mode]["cpu_ms_per_request"] / bare["cpu_ms_per_request"]
    return {"model": model, "stream": stream, "requests": requests, "rounds": rounds, "modes": summary}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="echo,demo-team")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = [
        benchmark(model, args.requests, args.rounds, stream)
        for model in args.models.split(",")
        for stream in (True, False)
    ]
    header = ("model", "stream", "mode", "req/s", "CPU ms/req", "spans/req", "thr ratio", "CPU ratio")
    print("{:<10} {:<6} {:<16} {:>8} {:>11} {:>9} {:>9} {:>9}".format(*header))
    for result in results:
        for mode, row in result["modes"].items():
            print(
                f"{result['model']:<10} {result['stream']!s:<6} {mode:<16} {row['requests_per_s']:>8.1f} "
                f"{row['cpu_ms_per_request']:>11.2f} {row['spans_per_request']:>9.1f} "
                f"{row.get('throughput_ratio_vs_bare', 1.0):>9.3f} {row.get('cpu_ratio_vs_bare', 1.0):>9.3f}"
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
