"""``make loadtest``: a bounded headless Locust campaign, with reports and a short summary.

With ``--target local`` (the default) it starts the fake LLM and the service (``autogen-service``, pointed at
the fake LLM through ``LLM_BASE_URL``) on free ports, runs Locust headless for ``--duration`` seconds, stops
everything, and prints a summary of the CSV. With ``--target http(s)://host:port`` it only runs Locust
against that deployment (``--api-key`` or ``$LOCUST_API_KEY``/``$OPENAI_API_KEY`` for auth).

Reports go to ``<out>/<timestamp>-<scenario>/``: ``locust_stats.csv``, ``locust_failures.csv``,
``locust_stats_history.csv``, ``report.html``, ``locust.log``, ``summary.json`` and, for local runs, the
service and fake LLM logs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtests.procs import REPO_ROOT, ServerProcess, start_fake_llm, start_service, venv_bin

SCENARIOS = {
    "stream": ["StreamingUser"],
    "nonstream": ["NonStreamingUser"],
    "mixed": ["MixedUser"],
    "spike": ["SpikeUser"],
    "all": [],
}
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
METRICS = ("time_to_first_token", "inter_chunk_latency", "stream_total_time", "chunks_per_s", "tokens_per_s")


def read_stats(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def summarize(stats_csv: Path) -> dict[str, Any]:
    """The figures worth printing, from Locust's ``*_stats.csv``."""
    rows = read_stats(stats_csv)

    def num(row: dict[str, str], key: str) -> float | None:
        try:
            return float(row[key])
        except (KeyError, ValueError):
            return None

    requests: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    aggregated: dict[str, Any] = {}
    for row in rows:
        entry = {
            "type": row.get("Type", ""),
            "name": row.get("Name", ""),
            "count": int(num(row, "Request Count") or 0),
            "failures": int(num(row, "Failure Count") or 0),
            "p50": num(row, "50%"),
            "p95": num(row, "95%"),
            "p99": num(row, "99%"),
            "avg": num(row, "Average Response Time"),
            "max": num(row, "Max Response Time"),
            "rps": num(row, "Requests/s"),
        }
        if row.get("Name") == "Aggregated":
            aggregated = entry
        elif row.get("Type") == "SSE":
            metrics.append(entry)
        else:
            requests.append(entry)
    failures = sum(r["failures"] for r in requests)
    return {
        "requests": requests,
        "metrics": metrics,
        "total_requests": sum(r["count"] for r in requests),
        "total_failures": failures,
        "aggregated": aggregated,
    }


def format_summary(summary: dict[str, Any]) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    lines = [f"{'requests':<48}{'count':>8}{'fail':>6}{'rps':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"]
    for r in summary["requests"]:
        rps = "-" if r["rps"] is None else f"{r['rps']:.1f}"
        lines.append(
            f"{r['type'] + ' ' + r['name']:<48}{r['count']:>8}{r['failures']:>6}{rps:>8}"
            f"{f(r['p50']):>8}{f(r['p95']):>8}{f(r['p99']):>8}"
        )
    if summary["metrics"]:
        lines.append("")
        lines.append(
            f"{'stream metrics (ms, or per second)':<48}{'count':>8}{'':>6}"
            f"{'avg':>8}{'p50':>8}{'p95':>8}{'p99':>8}"
        )
        for m in summary["metrics"]:
            lines.append(
                f"{m['name']:<48}{m['count']:>8}{'':>6}{f(m['avg']):>8}{f(m['p50']):>8}{f(m['p95']):>8}"
                f"{f(m['p99']):>8}"
            )
    lines.append("")
    lines.append(f"total: {summary['total_requests']} requests, {summary['total_failures']} failures")
    return "\n".join(lines)


def run_locust(
    host: str,
    scenario: str,
    users: int,
    spawn_rate: float,
    duration: int,
    model: str,
    report_dir: Path,
    api_key: str = "",
    extra_args: list[str] | None = None,
) -> int:
    locust = venv_bin("locust")
    cmd = [
        locust if os.access(locust, os.X_OK) else sys.executable,
        *([] if os.access(locust, os.X_OK) else ["-m", "locust"]),
        "-f",
        str(LOCUSTFILE),
        *SCENARIOS[scenario],
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate),
        "--run-time",
        f"{duration}s",
        "--stop-timeout",
        "30",
        "--host",
        host,
        "--model",
        model,
        "--csv",
        str(report_dir / "locust"),
        "--html",
        str(report_dir / "report.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
        *(extra_args or []),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if api_key:
        env["LOCUST_API_KEY"] = api_key
    if scenario == "spike":
        env["LOADTEST_SCENARIO"] = "spike"
    with open(report_dir / "locust.log", "wb") as log:
        proc = subprocess.run(
            cmd,
            cwd=str(REPO_ROOT),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=duration + 120,
            check=False,
        )
    return proc.returncode


def run_campaign(a: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(a.out)
    if not out.is_absolute():
        out = REPO_ROOT / out
    report_dir = out / f"{stamp}-{a.scenario}"
    report_dir.mkdir(parents=True, exist_ok=True)
    servers: list[ServerProcess] = []
    try:
        if a.target == "local":
            fake = start_fake_llm(
                log_path=report_dir / "fake-llm.log",
                ttft_ms=a.fake_ttft_ms,
                token_ms=a.fake_token_ms,
                tokens=a.fake_tokens,
                error_rate=a.fake_error_rate,
                terminate_turn=a.fake_terminate_turn,
            )
            servers.append(fake)
            env = {
                "LLM_BASE_URL": f"{fake.url}/v1",
                "LLM_API_KEY": "fake-key",
                "LLM_MODEL": "fake-llm",
                "MAX_CONCURRENT_WORKFLOWS": str(max(64, a.users * 2)),
            }
            svc = start_service("service", env, workers=a.workers, log_path=report_dir / "service.log")
            servers.append(svc)
            host = svc.url
            print(f"loadtest: fake LLM {fake.url}, service {svc.url} ({a.workers} worker(s))", flush=True)
        else:
            host = a.target
        print(
            f"loadtest: scenario {a.scenario}, {a.users} users at {a.spawn_rate}/s for {a.duration}s, "
            f"model {a.model}, target {host}",
            flush=True,
        )
        t0 = time.monotonic()
        code = run_locust(
            host, a.scenario, a.users, a.spawn_rate, a.duration, a.model, report_dir, a.api_key or ""
        )
        elapsed = time.monotonic() - t0
    finally:
        for server in reversed(servers):
            server.stop()
    stats_csv = report_dir / "locust_stats.csv"
    if not stats_csv.exists():
        tail = (report_dir / "locust.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"Locust wrote no CSV (exit code {code}):\n{tail}")
    summary = summarize(stats_csv)
    summary.update(
        {
            "scenario": a.scenario,
            "users": a.users,
            "spawn_rate": a.spawn_rate,
            "duration_s": a.duration,
            "target": a.target,
            "model": a.model,
            "locust_exit_code": code,
            "elapsed_s": round(elapsed, 1),
            "report_dir": str(report_dir),
        }
    )
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary, report_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.campaign", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--spawn-rate", type=float, default=8.0)
    p.add_argument("--duration", type=int, default=60, help="seconds")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="stream")
    p.add_argument("--target", default="local", help="'local' (fake LLM + service) or a base URL")
    p.add_argument("--model", default="demo-team", help="model id(s), comma-separated")
    p.add_argument("--api-key", default=os.environ.get("LOCUST_API_KEY") or os.environ.get("OPENAI_API_KEY"))
    p.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "2") or 2))
    p.add_argument("--fake-ttft-ms", type=float, default=100.0)
    p.add_argument("--fake-token-ms", type=float, default=10.0)
    p.add_argument("--fake-tokens", type=int, default=32)
    p.add_argument("--fake-error-rate", type=float, default=0.0)
    p.add_argument(
        "--fake-terminate-turn", type=int, default=3, help="the fake LLM says TERMINATE from this turn on"
    )
    p.add_argument("--out", default="reports")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    summary, report_dir = run_campaign(a)
    print()
    print(format_summary(summary))
    print(f"\nreports: {report_dir} (report.html, locust_stats.csv, summary.json)")
    sys.exit(0 if summary["total_failures"] == 0 and summary["locust_exit_code"] == 0 else 1)


if __name__ == "__main__":
    main()
