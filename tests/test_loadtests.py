"""Load-test tooling: the fake LLM, a 10-second Locust campaign, and `make bench` in a tiny configuration.

No timed assertions (same-second timings are noisy on 2 shared cores); every process started here is
stopped by its own handle.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import httpx
import openai
import pytest

from loadtests.campaign import run_campaign
from loadtests.fake_llm import start_fake_llm_process, start_fake_llm_thread

REPO = Path(__file__).resolve().parent.parent


def _service_available() -> bool:
    proc = subprocess.run(
        [sys.executable, "-c", "import service.app, service.cli"], cwd=REPO, capture_output=True, check=False
    )
    return proc.returncode == 0


needs_service = pytest.mark.skipif(not _service_available(), reason="service package not importable")


def test_fake_llm_speaks_openai_streaming_and_counts_requests() -> None:
    with start_fake_llm_thread(ttft_ms=0, token_ms=0, tokens=5) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hello"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert len({c.id for c in chunks}) == 1
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(text.split()) == 5
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 5
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].finish_reason == "stop" and reply.usage is not None
        short = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert short.choices[0].finish_reason == "length"
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-fake-error": "http"},
            )
        with pytest.raises(openai.APIError):
            for _ in client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                extra_headers={"x-fake-error": "stream", "x-fake-tokens": "10"},
            ):
                pass
        stats = fake.stats()
        assert stats["requests"] == 5
        assert stats["completed"] == 3
        assert stats["errors"] == 2
        assert stats["last_request_at"] is not None
        assert fake.reset_stats()["requests"] == 0


def test_fake_llm_process_counts_client_disconnects() -> None:
    with start_fake_llm_process(ttft_ms=0, token_ms=50, tokens=200) as fake:
        with (
            httpx.Client(timeout=10) as client,
            client.stream(
                "POST",
                f"{fake.base_url}/chat/completions",
                json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            ) as resp,
        ):
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if "content" in line and '"content":""' not in line:
                    break  # first token: leave
        deadline = time.monotonic() + 10
        stats = fake.stats()
        while stats["cancelled"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            stats = fake.stats()
        assert stats["requests"] == 1
        assert stats["cancelled"] == 1
        assert stats["completed"] == 0
        assert stats["in_flight"] == 0
        assert stats["last_cancelled_at"] is not None
        fake.configure(tokens=3, token_ms=0)
        assert fake.stats()["requests"] == 1


@needs_service
def test_locust_campaign_against_local_service_and_fake_llm(tmp_path: Path) -> None:
    args = Namespace(
        users=4,
        spawn_rate=4.0,
        duration=10,
        scenario="stream",
        target="local",
        model="echo,demo-team",
        api_key=None,
        workers=1,
        fake_ttft_ms=20.0,
        fake_token_ms=2.0,
        fake_tokens=8,
        fake_error_rate=0.0,
        fake_terminate_turn=3,
        out=str(tmp_path),
    )
    summary, report_dir = run_campaign(args)
    with open(report_dir / "locust_stats.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    aggregated = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(aggregated["Failure Count"]) == 0, (report_dir / "locust_failures.csv").read_text()
    ttft = [r for r in rows if r["Type"] == "SSE" and r["Name"].startswith("time_to_first_token")]
    assert ttft and all(int(r["Request Count"]) > 0 for r in ttft)
    names = {r["Name"].split(" [")[0] for r in rows if r["Type"] == "SSE"}
    assert {"inter_chunk_latency", "stream_total_time", "chunks_per_s", "tokens_per_s"} <= names
    streams = [r for r in rows if r["Type"] == "POST"]
    assert streams and sum(int(r["Request Count"]) for r in streams) > 0
    assert (report_dir / "report.html").stat().st_size > 0
    assert summary["total_failures"] == 0 and summary["locust_exit_code"] == 0


@pytest.mark.slow
@needs_service
def test_make_bench_tiny_writes_result_json(tmp_path: Path) -> None:
    # One level (2 streams), two rounds: the smallest run that still has every row, ratio, round
    # and the AgentChat-alone comparison (each level x round x target is a load-generator run).
    out = tmp_path / "bench"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    proc = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed",
            "bench",
            f"BENCH_ARGS=--tiny --levels 2 --rounds 2 --duration 0.5 --out {out}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "latest.json").read_text())
    assert result["schema"] == "autogen-service-bench/1"
    assert {"config", "machine", "probes", "results", "ratios", "open_streams", "targets", "files"} <= set(
        result
    )
    assert Path(result["files"]["chart"]).stat().st_size > 0
    targets = {(r["kind"], r["mode"], r["model"]) for r in result["results"]}
    for mode in ("embedded", "llm"):
        for model in ("echo", "demo-team"):
            assert {("floor", mode, model), ("service", mode, model)} <= targets
    for row in result["results"]:
        assert row["concurrency"] == 2
        assert row["completed"] > 0 and row["failed"] == 0, row
        assert row["rounds"] == 2 and len(row["cpu_ms_per_stream_rounds"]) == 2, row
        assert row["cpu_ms_per_stream"] in row["cpu_ms_per_stream_rounds"]
        for key in ("streams_per_s", "cpu_ms_per_stream", "peak_rss_mb_per_worker"):
            assert isinstance(row[key], int | float), (key, row)
        for key in ("p50", "p99"):
            assert isinstance(row["ttft_ms"][key], float) and isinstance(row["total_ms"][key], float)
    assert len(result["ratios"]) == 2 * 2 * 1  # modes x models x levels
    for ratio in result["ratios"]:
        for key in ("cpu_ratio", "efficiency", "throughput_ratio", "ttft_p50_added_ms", "total_p50_ratio"):
            assert key in ratio
    service_open = result["open_streams"]["service"]
    assert service_open["failed"] == 0 and service_open["completed"] == service_open["count"]
    assert "rss_kb_per_open_stream" in service_open
    assert all({"name", "value", "limit", "met"} <= set(t) for t in result["targets"])
    alone = {row["model"]: row for row in result["agentchat_alone"]}
    assert set(alone) == {"echo", "demo-team"} and alone["demo-team"]["concurrency"] == 2
    assert alone["demo-team"]["cpu_ms_per_run"] > alone["echo"]["cpu_ms_per_run"] > 0
    assert alone["demo-team"]["tokens_per_run"] > alone["echo"]["tokens_per_run"] > 0
    assert "AgentChat alone (demo-team" in proc.stdout
    assert "service / floor" in proc.stdout
