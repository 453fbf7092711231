"""``make bench``: the service's overhead measured against the floor, in the same run, same load generator.

For each mode (``embedded``: the service's offline demo model with ``DEMO_LLM_TTFT_MS``/``DEMO_LLM_TOKEN_MS``;
``llm``: the service pointed at the fake LLM through ``LLM_BASE_URL``), each model (``echo``, ``demo-team``)
and each concurrency level (open streams, closed loop), it runs the floor and then the service with the
lean asyncio load generator (``loadtests.loadgen``, a separate process), and records:

- completed streams/s, p50/p99 time to first token, p50/p99 total stream time (client side);
- server CPU milliseconds per completed stream: utime+stime of the server's whole process tree from
  ``/proc`` before/after the level (in-flight streams are drained, so all that CPU belongs to the counted
  streams);
- peak RSS per worker (``VmHWM``);
- the ratio service/floor of each figure.

Each level is measured in ``--rounds`` rounds (default 3) that alternate floor and service; the round with
the median CPU per stream is kept, so one slow spell of a shared machine cannot decide a ratio.

The floor (``loadtests.floor``) streams the same number of content chunks with the same model timing and no
agents: the number of model calls per request and of chunks per reply are probed from the service first
(the fake LLM counts the calls). In ``llm`` mode the floor proxies the same number of calls to the same fake
LLM. A last phase opens ``--open-streams`` streams at once against a slow fake LLM (``--open-reply-s``) and
reports errors and memory per open stream, for the service and the floor.

Writes ``<out>/bench-<run>.json`` and ``.png`` (and ``latest.json``/``latest.png``) and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests import loadgen
from loadtests.procs import (
    REPO_ROOT,
    ServerProcess,
    spawn_service,
    start_fake_llm,
    start_floor,
    wait_ready,
)

SCHEMA = "autogen-service-bench/1"
# LLM calls per request when they cannot be probed (no ``llm`` mode in the run)
DEFAULT_CALLS = {"echo": 1, "demo-team": 3}
PROMPT = (
    "load tests measure how much a streaming agent service costs per request compared with the "
    "cheapest possible server that streams the same chunks with the same timing and no agents at all"
)


@dataclass
class BenchConfig:
    levels: list[int] = field(default_factory=lambda: [1, 16, 64, 256])
    duration_s: float = 5.0
    ttft_ms: float = 50.0
    token_ms: float = 5.0
    tokens: int = 32
    models: list[str] = field(default_factory=lambda: ["echo", "demo-team"])
    modes: list[str] = field(default_factory=lambda: ["embedded", "llm"])
    workers: int = 1
    open_streams: int = 1000
    open_reply_s: float = 5.0
    open_model: str = "echo"
    open_ramp_s: float = 2.0
    stream_timeout_s: float = 120.0
    drain_s: float = 60.0
    terminate_turn: int = 3
    settle_s: float = 0.3
    service: bool = True
    service_env: dict[str, str] = field(default_factory=dict)
    out_dir: str = "bench-results"
    judge_level: int = 64
    rounds: int = 3

    @property
    def prompt(self) -> str:
        vocabulary = PROMPT.split()
        words = [vocabulary[i % len(vocabulary)] for i in range(max(1, self.tokens))]
        return " ".join(words)


TINY = {
    "levels": [1, 4],
    "ttft_ms": 10.0,
    "token_ms": 2.0,
    "tokens": 8,
    "open_streams": 20,
    "open_reply_s": 1.0,
    "open_ramp_s": 0.3,
    "stream_timeout_s": 30.0,
    "drain_s": 15.0,
    "settle_s": 0.05,
    "duration_s": 0.8,
    "judge_level": 4,
    "rounds": 1,
}


# ---------------------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Target:
    kind: str  # floor | service
    mode: str  # embedded | llm
    model: str
    server: ServerProcess
    extra: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.mode}:{self.model}"


def _loadgen_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_loadgen(args: list[str], out_file: Path, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "loadtests.loadgen", *args, "--output", str(out_file)]
    proc = subprocess.run(
        cmd, cwd=str(REPO_ROOT), env=_loadgen_env(), capture_output=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out_file.read_text())
    return result


def combine_rounds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for a target and level measured in several rounds: the round with the median CPU per
    stream (all its figures, so they stay consistent), with failures summed over every round."""
    if len(rows) == 1:
        return {**rows[0], "rounds": 1, "cpu_ms_per_stream_rounds": [rows[0]["cpu_ms_per_stream"]]}

    def cpu(row: dict[str, Any]) -> float:
        value = row["cpu_ms_per_stream"]
        return float("inf") if value is None else float(value)

    ranked = sorted(rows, key=cpu)
    combined = dict(ranked[(len(ranked) - 1) // 2])
    combined["rounds"] = len(rows)
    combined["cpu_ms_per_stream_rounds"] = [row["cpu_ms_per_stream"] for row in rows]
    for key in ("failed", "aborted"):
        combined[key] = sum(row[key] for row in rows)
    combined["completed_all_rounds"] = sum(row["completed"] for row in rows)
    combined["error_samples"] = [sample for row in rows for sample in row["error_samples"]][:10]
    errors: dict[str, int] = {}
    for row in rows:
        for kind, count in row["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    combined["errors"] = errors
    return combined


def run_agentchat_alone(cfg: BenchConfig, level: int) -> list[dict[str, Any]]:
    """Each model's workflow run in process with no serving layer (``loadtests.agentchat_cost``)."""
    rows = []
    for model in cfg.models:
        cmd = [
            sys.executable,
            "-m",
            "loadtests.agentchat_cost",
            f"--model={model}",
            f"--concurrency={level}",
            f"--runs={max(16, 4 * level)}",
            f"--ttft-ms={cfg.ttft_ms}",
            f"--token-ms={cfg.token_ms}",
            f"--prompt={cfg.prompt}",
        ]
        done = subprocess.run(
            cmd, cwd=REPO_ROOT, env=_loadgen_env(), capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"agentchat_cost failed for {model}:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def _mb(kb: int) -> float:
    return round(kb / 1024.0, 1)


def measure(
    cfg: BenchConfig, target: Target, level: int, fake: ServerProcess | None, work: Path, round_no: int = 1
) -> dict[str, Any]:
    srv = target.server
    if not srv.alive():
        raise RuntimeError(f"{srv.name} died:\n{srv.tail_log()}")
    args = [
        "--url",
        srv.url,
        "--model",
        target.model,
        "--prompt",
        cfg.prompt,
        "--concurrency",
        str(level),
        "--duration",
        str(cfg.duration_s),
        "--timeout",
        str(cfg.stream_timeout_s),
        "--drain",
        str(cfg.drain_s),
        "--extra-json",
        json.dumps(target.extra),
    ]
    load_before = os.getloadavg()[0]
    cpu0 = srv.cpu_seconds()
    fake0 = fake.cpu_seconds() if fake is not None and target.mode == "llm" else 0.0
    out = work / f"lg-{target.kind}-{target.mode}-{target.model}-{level}-r{round_no}.json"
    lg = run_loadgen(args, out, cfg.duration_s + cfg.drain_s + 60)
    time.sleep(cfg.settle_s)  # let the server finish closing the connections
    cpu_ms = (srv.cpu_seconds() - cpu0) * 1000.0
    fake_ms = (fake.cpu_seconds() - fake0) * 1000.0 if fake is not None and target.mode == "llm" else None
    done = lg["completed"]
    return {
        "target": target.name,
        "kind": target.kind,
        "mode": target.mode,
        "model": target.model,
        "concurrency": level,
        "completed": done,
        "failed": lg["failed"],
        "aborted": lg["aborted"],
        "errors": lg["errors"],
        "error_samples": lg["error_samples"],
        "elapsed_s": round(lg["elapsed_s"], 3),
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "streams_per_s": round(lg["streams_per_s"], 2),
        "ttft_ms": lg["ttft_ms"],
        "ttft_p50_over_model_ms": round(lg["ttft_ms"]["p50"] - cfg.ttft_ms, 2)
        if lg["ttft_ms"]["p50"] is not None
        else None,
        "total_ms": lg["total_ms"],
        "chunks_mean": lg["chunks_mean"],
        "completion_tokens_mean": lg["completion_tokens_mean"],
        "server_cpu_ms": round(cpu_ms, 1),
        "cpu_ms_per_stream": round(cpu_ms / done, 3) if done else None,
        "fake_llm_cpu_ms_per_stream": round(fake_ms / done, 3) if fake_ms is not None and done else None,
        "loadgen_cpu_ms_per_stream": round(lg["loadgen_cpu_ms"] / done, 3) if done else None,
        "peak_rss_mb_per_worker": _mb(srv.peak_rss_kb_per_worker()),
        "rss_mb_per_worker": _mb(srv.rss_kb_per_worker()),
    }


async def _probe_async(server: ServerProcess, model: str, prompt: str, extra: dict[str, Any], n: int) -> int:
    body = loadgen.build_body(model, prompt, None, extra)
    target = loadgen.Target(server.url, None, body)
    chunks = 0
    for _ in range(n):
        reader, writer = await target.connect()
        try:
            res = await asyncio.wait_for(loadgen.run_one_stream(reader, writer, target.request), 60)
        finally:
            writer.close()
        chunks = res.chunks
    return chunks


def probe(server: ServerProcess, model: str, prompt: str, extra: dict[str, Any], n: int = 3) -> int:
    """Run ``n`` streams (warm-up) and return the number of content chunks of the last one."""
    return asyncio.run(_probe_async(server, model, prompt, extra, n))


def _pct(values: dict[str, Any], key: str) -> float | None:
    v = values.get(key)
    return float(v) if v is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def compute_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    index = {(r["kind"], r["mode"], r["model"], r["concurrency"]): r for r in rows}
    out = []
    for (kind, mode, model, level), s in index.items():
        if kind != "service":
            continue
        f = index.get(("floor", mode, model, level))
        if f is None:
            continue
        s_ttft50, f_ttft50 = _pct(s["ttft_ms"], "p50"), _pct(f["ttft_ms"], "p50")
        cpu_ratio = _ratio(s["cpu_ms_per_stream"], f["cpu_ms_per_stream"])
        out.append(
            {
                "mode": mode,
                "model": model,
                "concurrency": level,
                "cpu_ratio": cpu_ratio,
                "efficiency": round(1.0 / cpu_ratio, 3) if cpu_ratio else None,
                "throughput_ratio": _ratio(s["streams_per_s"], f["streams_per_s"]),
                "ttft_p50_ratio": _ratio(s_ttft50, f_ttft50),
                "ttft_p99_ratio": _ratio(_pct(s["ttft_ms"], "p99"), _pct(f["ttft_ms"], "p99")),
                "ttft_p50_added_ms": round(s_ttft50 - f_ttft50, 2)
                if s_ttft50 is not None and f_ttft50 is not None
                else None,
                "total_p50_ratio": _ratio(_pct(s["total_ms"], "p50"), _pct(f["total_ms"], "p50")),
                "total_p99_ratio": _ratio(_pct(s["total_ms"], "p99"), _pct(f["total_ms"], "p99")),
                "peak_rss_ratio": _ratio(s["peak_rss_mb_per_worker"], f["peak_rss_mb_per_worker"]),
                "service_cpu_ms_per_stream": s["cpu_ms_per_stream"],
                "floor_cpu_ms_per_stream": f["cpu_ms_per_stream"],
            }
        )
    return out


def judged_level(levels: list[int], wanted: int) -> int:
    """The measured concurrency level the CPU targets are judged at: the one nearest to `wanted`."""
    return min(levels, key=lambda level: abs(level - wanted)) if levels else wanted


def at_most(name: str, value: float | None, limit: float, unit: str) -> dict[str, Any]:
    """A target met when `value` is known and at most `limit`."""
    met = value is not None and value <= limit
    return {"name": name, "value": value, "limit": limit, "unit": unit, "met": met}


def evaluate_targets(
    cfg: BenchConfig,
    rows: list[dict[str, Any]],
    ratios: list[dict[str, Any]],
    open_streams: dict[str, Any],
    agentchat_alone: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The issue's targets (benchmark results, not tests): value, limit, met."""
    levels = sorted({r["concurrency"] for r in rows})
    judge = judged_level(levels, cfg.judge_level)
    lowest = levels[0] if levels else 1
    targets: list[dict[str, Any]] = []

    def find_ratio(mode: str, model: str, level: int) -> dict[str, Any] | None:
        return next(
            (x for x in ratios if x["mode"] == mode and x["model"] == model and x["concurrency"] == level),
            None,
        )

    for mode in cfg.modes:
        r = find_ratio(mode, "echo", judge)
        if r is not None:
            targets.append(
                at_most(
                    f"echo ({mode}): server CPU per stream <= 2x floor, {judge} streams, 1 worker",
                    r["cpu_ratio"],
                    2.0,
                    "x floor",
                )
            )
        r = find_ratio(mode, "echo", lowest)
        if r is not None:
            targets.append(
                at_most(
                    f"echo ({mode}): time to first token added over the floor, p50, {lowest} stream(s)",
                    r["ttft_p50_added_ms"],
                    10.0,
                    "ms",
                )
            )
        row = next(
            (
                x
                for x in rows
                if x["kind"] == "service"
                and x["mode"] == mode
                and x["model"] == "demo-team"
                and x["concurrency"] == judge
            ),
            None,
        )
        if row is not None:
            target = at_most(
                f"demo-team ({mode}): server CPU per stream, {judge} streams, 1 worker",
                row["cpu_ms_per_stream"],
                8.0,
                "ms",
            )
            floor_row = find_ratio(mode, "demo-team", judge)
            alone = next((a for a in agentchat_alone or [] if a["model"] == "demo-team"), None)
            if floor_row is not None and alone is not None and mode == "embedded":
                target["detail"] = (
                    f"floor {_f(floor_row['floor_cpu_ms_per_stream'], 2)} ms + AgentChat alone "
                    f"{_f(alone['cpu_ms_per_run'], 2)} ms"
                )
            targets.append(target)
    svc = open_streams.get("service") if open_streams else None
    if svc:
        targets.append(
            {
                "name": f"{svc['count']} open streams on 1 worker, {cfg.open_reply_s:g} s replies: errors",
                "value": svc["failed"],
                "limit": 0,
                "unit": "errors",
                "met": svc["failed"] == 0 and svc["completed"] == svc["count"],
                "detail": f"memory per open stream {svc['rss_kb_per_open_stream']} kB",
            }
        )
    return targets


# ---------------------------------------------------------------------------------------------------------
# open streams
# ---------------------------------------------------------------------------------------------------------
class _Sampler:
    """Samples a server's RSS and the fake LLM's in-flight count while the open streams run."""

    def __init__(self, server: ServerProcess, fake: ServerProcess) -> None:
        self.server = server
        self.fake = fake
        self.peak_worker_kb = 0
        self.peak_total_kb = 0
        self.peak_upstream_in_flight = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from loadtests.fake_http import http_json

        while not self._stop.is_set():
            self.peak_worker_kb = max(self.peak_worker_kb, self.server.rss_kb_per_worker())
            self.peak_total_kb = max(self.peak_total_kb, self.server.rss_kb_total())
            try:
                in_flight = int(http_json(f"{self.fake.url}/stats", timeout=2)["in_flight"])
                self.peak_upstream_in_flight = max(self.peak_upstream_in_flight, in_flight)
            except OSError:
                pass
            self._stop.wait(0.25)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def open_streams_fake_llm(cfg: BenchConfig) -> dict[str, Any]:
    """Fake LLM timing that makes replies last ``open_reply_s``: 40 % waiting for the first token, then a
    token every 250 ms (a slow model; streams stay open rather than pushing many chunks)."""
    token_ms = 250.0 if cfg.open_reply_s >= 2 else 50.0
    ttft_ms = cfg.open_reply_s * 1000.0 * 0.4
    tokens = max(1, int((cfg.open_reply_s * 1000.0 - ttft_ms) / token_ms) + 1)
    return {"ttft_ms": ttft_ms, "token_ms": token_ms, "tokens": tokens}


def run_open_streams(
    cfg: BenchConfig, work: Path, fake: ServerProcess, floor: ServerProcess, svc: ServerProcess | None
) -> dict[str, Any]:
    """``cfg.open_streams`` streams at once on fresh processes (started idle with the others)."""
    n = cfg.open_streams
    result: dict[str, Any] = {"count": n, "model": cfg.open_model, "fake_llm": open_streams_fake_llm(cfg)}
    todo: list[tuple[str, ServerProcess, dict[str, Any]]] = []
    if svc is not None:
        probe(svc, cfg.open_model, cfg.prompt, {}, n=1)
        todo.append(("service", svc, {}))
    todo.append(("floor", floor, {"x_floor": {"calls": 1, "proxy": True}}))
    for kind, server, extra in todo:
        time.sleep(cfg.settle_s)
        base_worker = server.rss_kb_per_worker()
        base_total = server.rss_kb_total()
        cpu0 = server.cpu_seconds()
        args = [
            "--url",
            server.url,
            "--model",
            cfg.open_model,
            "--prompt",
            cfg.prompt,
            "--open",
            str(n),
            "--ramp",
            str(cfg.open_ramp_s),
            "--timeout",
            str(cfg.stream_timeout_s),
            "--extra-json",
            json.dumps(extra),
        ]
        with _Sampler(server, fake) as sampler:
            lg = run_loadgen(args, work / f"lg-open-{kind}.json", cfg.stream_timeout_s + 120)
        cpu_ms = (server.cpu_seconds() - cpu0) * 1000.0
        result[kind] = {
            "count": n,
            "completed": lg["completed"],
            "failed": lg["failed"],
            "errors": lg["errors"],
            "error_samples": lg["error_samples"],
            "max_open_client_side": lg["max_in_flight"],
            "max_upstream_in_flight": sampler.peak_upstream_in_flight,
            "ttft_ms": lg["ttft_ms"],
            "total_ms": lg["total_ms"],
            "baseline_rss_mb_per_worker": _mb(base_worker),
            "peak_rss_mb_per_worker": _mb(sampler.peak_worker_kb),
            "rss_kb_per_open_stream": round((sampler.peak_worker_kb - base_worker) / n, 1),
            "rss_kb_per_active_upstream_call": round(
                (sampler.peak_worker_kb - base_worker) / max(1, sampler.peak_upstream_in_flight), 1
            ),
            "rss_kb_per_open_stream_all_processes": round((sampler.peak_total_kb - base_total) / n, 1),
            "cpu_ms_per_stream": round(cpu_ms / lg["completed"], 3) if lg["completed"] else None,
        }
    return result


# ---------------------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------------------
def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_tables(result: dict[str, Any]) -> str:
    lines = []
    head = (
        f"{'target':<26}{'conc':>5}{'streams/s':>10}{'ttft p50':>9}{'ttft p99':>9}{'total p50':>10}"
        f"{'total p99':>10}{'cpu ms/str':>11}{'rss MB':>8}{'chunks':>7}{'errors':>7}"
    )
    lines += ["results (times in ms; cpu = server process tree, per completed stream)", head, "-" * len(head)]
    for r in result["results"]:
        lines.append(
            f"{r['target']:<26}{r['concurrency']:>5}{_f(r['streams_per_s']):>10}{_f(r['ttft_ms']['p50']):>9}"
            f"{_f(r['ttft_ms']['p99']):>9}{_f(r['total_ms']['p50']):>10}{_f(r['total_ms']['p99']):>10}"
            f"{_f(r['cpu_ms_per_stream'], 2):>11}{_f(r['peak_rss_mb_per_worker']):>8}"
            f"{_f(r['chunks_mean'], 0):>7}{r['failed']:>7}"
            + (f" (+{r['aborted']} aborted)" if r["aborted"] else "")
        )
    if result["ratios"]:
        head = (
            f"{'service / floor':<22}{'conc':>5}{'cpu x':>7}{'effic.':>7}{'str/s x':>8}{'ttft+ms':>8}"
            f"{'ttft50 x':>9}{'ttft99 x':>9}{'tot50 x':>8}{'tot99 x':>8}{'rss x':>7}"
        )
        lines += ["", head, "-" * len(head)]
        for x in result["ratios"]:
            lines.append(
                f"{x['mode'] + ':' + x['model']:<22}{x['concurrency']:>5}{_f(x['cpu_ratio'], 2):>7}"
                f"{_f(x['efficiency'], 2):>7}{_f(x['throughput_ratio'], 2):>8}{_f(x['ttft_p50_added_ms']):>8}"
                f"{_f(x['ttft_p50_ratio'], 2):>9}{_f(x['ttft_p99_ratio'], 2):>9}"
                f"{_f(x['total_p50_ratio'], 2):>8}"
                f"{_f(x['total_p99_ratio'], 2):>8}{_f(x['peak_rss_ratio'], 2):>7}"
            )
    for alone in result.get("agentchat_alone") or []:
        lines.append(
            f"\nAgentChat alone ({alone['model']}, in process, no HTTP, {alone['concurrency']} concurrent): "
            f"{_f(alone['cpu_ms_per_run'], 2)} ms CPU per run, "
            f"{_f(alone['tokens_per_run'], 0)} tokens per run"
        )
    op = result.get("open_streams") or {}
    for kind in ("service", "floor"):
        o = op.get(kind)
        if o:
            lines.append(
                f"\nopen streams ({kind}, {op['model']}): {o['completed']}/{o['count']} ok, "
                f"{o['failed']} errors, "
                f"max open {o['max_open_client_side']} (upstream {o['max_upstream_in_flight']}), "
                f"rss {o['baseline_rss_mb_per_worker']} -> {o['peak_rss_mb_per_worker']} MB/worker, "
                f"{o['rss_kb_per_open_stream']} kB per open stream, ttft p50 {_f(o['ttft_ms']['p50'])} ms"
            )
    if result["targets"]:
        lines += ["", "targets"]
        for t in result["targets"]:
            mark = "MET " if t["met"] else "MISS"
            detail = f" ({t['detail']})" if t.get("detail") else ""
            lines.append(
                f"  [{mark}] {t['name']}: {_f(t['value'], 2)} (limit {t['limit']} {t['unit']}){detail}"
            )
    return "\n".join(lines)


def draw_chart(result: dict[str, Any], path: Path) -> None:
    """Four panels: CPU per stream, throughput, TTFT p50/p99 (floor dashed, service solid, one colour per
    mode:model), and the service/floor CPU ratio per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def val(v: Any) -> float:
        return float(v) if v is not None else float("nan")

    rows = result["results"]
    levels = sorted({r["concurrency"] for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    (ax_cpu, ax_tp), (ax_ttft, ax_ratio) = axes
    groups = sorted({(r["mode"], r["model"]) for r in rows})
    colours = {g: f"C{i}" for i, g in enumerate(groups)}
    for mode, model in groups:
        for kind, style in (("floor", "--"), ("service", "-")):
            series = sorted(
                (r for r in rows if (r["kind"], r["mode"], r["model"]) == (kind, mode, model)),
                key=lambda r: r["concurrency"],
            )
            if not series:
                continue
            xs = [r["concurrency"] for r in series]
            kw: dict[str, Any] = {
                "color": colours[(mode, model)],
                "marker": "o",
                "label": f"{kind} {mode}:{model}",
            }
            ax_cpu.plot(xs, [val(r["cpu_ms_per_stream"]) for r in series], style, **kw)
            ax_tp.plot(xs, [val(r["streams_per_s"]) for r in series], style, **kw)
            ax_ttft.plot(xs, [val(r["ttft_ms"]["p50"]) for r in series], style, **kw)
            kw.pop("label")
            ax_ttft.plot(xs, [val(r["ttft_ms"]["p99"]) for r in series], style, alpha=0.35, **kw)
    for ax, title, ylabel in (
        (ax_cpu, "server CPU per completed stream (lower is better)", "CPU ms / stream (log)"),
        (ax_tp, "throughput (the load generator shares the cores)", "completed streams / s"),
        (ax_ttft, "time to first token: p50 (bold), p99 (faint)", "ms (log)"),
    ):
        ax.set_xscale("log")
        ax.set_xticks(levels, [str(v) for v in levels])
        ax.minorticks_off()
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_cpu.set_yscale("log")
    ax_ttft.set_yscale("log")
    ratios = result["ratios"]
    rgroups = sorted({(x["mode"], x["model"]) for x in ratios})
    width = 0.8 / max(1, len(rgroups))
    for gi, (mode, model) in enumerate(rgroups):
        vals = []
        for lv in levels:
            x = next(
                (x for x in ratios if (x["mode"], x["model"], x["concurrency"]) == (mode, model, lv)), None
            )
            vals.append(val(x["cpu_ratio"]) if x else float("nan"))
        ax_ratio.bar(
            [i + gi * width for i in range(len(levels))],
            vals,
            width,
            label=f"{mode}:{model}",
            color=colours.get((mode, model)),
        )
    ax_ratio.axhline(2.0, color="red", linestyle=":", label="echo target (2x)")
    ax_ratio.axhline(1.0, color="grey", linestyle="-", linewidth=0.8)
    ax_ratio.set_xticks(
        [i + width * (len(rgroups) - 1) / 2 for i in range(len(levels))], [str(v) for v in levels]
    )
    ax_ratio.set_xlabel("concurrent streams")
    ax_ratio.set_ylabel("service CPU / floor CPU, per stream")
    ax_ratio.set_title("overhead ratio (1 = as cheap as the floor)")
    ax_ratio.grid(True, axis="y", alpha=0.3)
    ax_ratio.legend(fontsize=7)
    cfg = result["config"]
    fig.suptitle(
        f"autogen-service bench {result['run_id']}: model ttft {cfg['ttft_ms']:g} ms, "
        f"token {cfg['token_ms']:g} ms, "
        f"{cfg['duration_s']:g} s per level, {result['machine']['cpus']} CPUs, {cfg['workers']} worker(s)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------
def _service_env(cfg: BenchConfig, llm_url: str | None = None) -> dict[str, str]:
    env = {
        "MAX_CONCURRENT_WORKFLOWS": "100000",
        "DEMO_LLM_TTFT_MS": str(cfg.ttft_ms),
        "DEMO_LLM_TOKEN_MS": str(cfg.token_ms),
    }
    if llm_url:
        env.update({"LLM_BASE_URL": llm_url, "LLM_API_KEY": "fake-key", "LLM_MODEL": "fake-llm"})
    env.update(cfg.service_env)
    return env


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    from loadtests.fake_http import http_json

    loadgen.raise_nofile_limit()  # the servers inherit it
    run_id = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(cfg.out_dir)
    if not out_dir.is_absolute():
        out_dir = REPO_ROOT / out_dir
    work = out_dir / f"run-{run_id}"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "run_id": run_id,
        "started_at": started,
        "config": asdict(cfg),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": list(os.getloadavg()),
        },
        "probes": [],
        "results": [],
        "ratios": [],
        "open_streams": {},
        "agentchat_alone": [],
        "targets": [],
    }
    servers: list[ServerProcess] = []
    try:
        fake = start_fake_llm(
            log_path=logs / "fake-llm.log",
            ttft_ms=cfg.ttft_ms,
            token_ms=cfg.token_ms,
            tokens=cfg.tokens,
            terminate_turn=cfg.terminate_turn,
        )
        servers.append(fake)
        floor = start_floor(cfg.ttft_ms, cfg.token_ms, cfg.tokens, f"{fake.url}/v1", logs / "floor.log")
        servers.append(floor)
        services: dict[str, ServerProcess] = {}
        open_servers: dict[str, ServerProcess] = {}
        pending: dict[str, ServerProcess] = {}
        if cfg.open_streams > 0:
            # fresh processes for the open-streams phase, started now (idle until then) to overlap start-ups
            slow = start_fake_llm(
                log_path=logs / "fake-llm-open.log",
                terminate_turn=cfg.terminate_turn,
                **open_streams_fake_llm(cfg),
            )
            servers.append(slow)
            open_servers["fake"] = slow
            timing = open_streams_fake_llm(cfg)
            open_servers["floor"] = start_floor(
                timing["ttft_ms"],
                timing["token_ms"],
                timing["tokens"],
                f"{slow.url}/v1",
                logs / "floor-open.log",
            )
            servers.append(open_servers["floor"])
            if cfg.service:
                pending["open"] = spawn_service(
                    "service-open",
                    _service_env(cfg, f"{slow.url}/v1"),
                    cfg.workers,
                    logs / "service-open.log",
                )
                servers.append(pending["open"])
        if cfg.service:
            for mode in cfg.modes:
                llm_url = f"{fake.url}/v1" if mode == "llm" else None
                pending[mode] = spawn_service(
                    f"service-{mode}", _service_env(cfg, llm_url), cfg.workers, logs / f"service-{mode}.log"
                )
                servers.append(pending[mode])
        for mode, server in pending.items():
            if mode == "open":
                open_servers["service"] = wait_ready(server)
            else:
                services[mode] = wait_ready(server)

        # probe: chunks per reply and LLM calls per request, per model
        calls: dict[str, int] = {}
        plan: list[tuple[Target, Target | None]] = []
        for mode in sorted(cfg.modes, key=lambda m: m != "llm"):  # llm first: it counts the calls
            for model in cfg.models:
                probe_row: dict[str, Any] = {"mode": mode, "model": model}
                svc = services.get(mode)
                if svc is not None:
                    http_json(f"{fake.url}/stats/reset", method="POST")
                    chunks = probe(svc, model, cfg.prompt, {}, n=3)
                    if mode == "llm":
                        calls[model] = round(int(http_json(f"{fake.url}/stats")["requests"]) / 3)
                    probe_row["service_chunks"] = chunks
                else:
                    chunks = cfg.tokens * DEFAULT_CALLS.get(model, 1)
                n_calls = calls.get(model, DEFAULT_CALLS.get(model, 1))
                probe_row["llm_calls"] = n_calls
                if mode == "llm":
                    extra: dict[str, Any] = {"x_floor": {"calls": n_calls, "proxy": True}}
                else:
                    extra = {"x_floor": {"calls": n_calls, "chunks": chunks}}
                probe_row["floor_chunks"] = probe(floor, model, cfg.prompt, extra, n=2)
                probe_row["floor_request_extra"] = extra
                result["probes"].append(probe_row)
                floor_t = Target("floor", mode, model, floor, extra)
                svc_t = Target("service", mode, model, svc, {}) if svc is not None else None
                plan.append((floor_t, svc_t))
        plan.sort(key=lambda p: (cfg.modes.index(p[0].mode), cfg.models.index(p[0].model)))

        for floor_t, svc_t in plan:
            for level in cfg.levels:
                targets = [target for target in (floor_t, svc_t) if target is not None]
                # floor and service alternate round by round, so a slow spell of the machine (a noisy
                # neighbour, frequency scaling) hits both instead of skewing their ratio
                rounds: dict[str, list[dict[str, Any]]] = {target.name: [] for target in targets}
                for round_no in range(1, cfg.rounds + 1):
                    for target in targets:
                        row = measure(cfg, target, level, fake, work, round_no)
                        rounds[target.name].append(row)
                        print(
                            f"  {row['target']:<26} {level:>4} streams: {row['streams_per_s']:>7.1f}/s "
                            f"cpu {_f(row['cpu_ms_per_stream'], 2):>7} ms/stream  ttft p50 "
                            f"{_f(row['ttft_ms']['p50'])} ms  errors {row['failed']}"
                            + (f"  (round {round_no}/{cfg.rounds})" if cfg.rounds > 1 else ""),
                            flush=True,
                        )
                        time.sleep(cfg.settle_s)
                result["results"].extend(combine_rounds(rows) for rows in rounds.values())
        if cfg.service and "embedded" in cfg.modes:
            judge = judged_level(cfg.levels, cfg.judge_level)
            print(f"  AgentChat alone (in process, no HTTP), {judge} concurrent runs ...", flush=True)
            result["agentchat_alone"] = run_agentchat_alone(cfg, judge)
        if open_servers:
            for server in (fake, floor, *services.values()):
                server.stop()
            print(f"  open streams: {cfg.open_streams} x {cfg.open_reply_s:g} s replies ...", flush=True)
            result["open_streams"] = run_open_streams(
                cfg, work, open_servers["fake"], open_servers["floor"], open_servers.get("service")
            )
    finally:
        for server in reversed(servers):
            server.stop()
    result["ratios"] = compute_ratios(result["results"])
    result["targets"] = evaluate_targets(
        cfg, result["results"], result["ratios"], result["open_streams"], result["agentchat_alone"]
    )
    result["finished_at"] = time.time()
    result["duration_s"] = round(result["finished_at"] - started, 1)
    json_path = out_dir / f"bench-{run_id}.json"
    png_path = out_dir / f"bench-{run_id}.png"
    result["files"] = {"json": str(json_path), "chart": str(png_path), "logs": str(logs)}
    draw_chart(result, png_path)
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    shutil.copyfile(json_path, out_dir / "latest.json")
    shutil.copyfile(png_path, out_dir / "latest.png")
    return result


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, bool]:
    """The configuration, and whether a missed target should fail the command (``--strict``)."""
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="a seconds-long configuration (for tests)")
    p.add_argument("--levels", default=None, help="comma-separated concurrency levels (default 1,16,64,256)")
    p.add_argument("--duration", type=float, default=None, help="seconds of load per level (default 5)")
    p.add_argument(
        "--rounds", type=int, default=None, help="floor/service rounds per level, median kept (default 3)"
    )
    p.add_argument("--ttft-ms", type=float, default=None)
    p.add_argument("--token-ms", type=float, default=None)
    p.add_argument("--tokens", type=int, default=None, help="tokens per LLM reply / words in the prompt")
    p.add_argument("--models", default=None, help="comma-separated (default echo,demo-team)")
    p.add_argument("--modes", default=None, help="comma-separated: embedded, llm (default both)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--open-streams", type=int, default=None, help="0 skips the open-streams phase")
    p.add_argument("--open-reply-s", type=float, default=None)
    p.add_argument("--open-model", default=None)
    p.add_argument("--drain", type=float, default=None, help="seconds granted to in-flight streams per level")
    p.add_argument(
        "--terminate-turn",
        type=int,
        default=None,
        help="the fake LLM says TERMINATE from this turn on (default 3: one round of demo-team; 0: never)",
    )
    p.add_argument("--no-service", action="store_true", help="floor only (checks the harness itself)")
    p.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="output folder (default bench-results)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    a = p.parse_args(argv)
    values: dict[str, Any] = dict(TINY) if a.tiny else {}
    simple = {
        "duration_s": a.duration,
        "rounds": a.rounds,
        "ttft_ms": a.ttft_ms,
        "token_ms": a.token_ms,
        "tokens": a.tokens,
        "workers": a.workers,
        "open_streams": a.open_streams,
        "open_reply_s": a.open_reply_s,
        "open_model": a.open_model,
        "drain_s": a.drain,
        "terminate_turn": a.terminate_turn,
        "out_dir": a.out,
    }
    values.update({k: v for k, v in simple.items() if v is not None})
    if a.levels:
        values["levels"] = [int(x) for x in a.levels.split(",") if x.strip()]
    if a.models:
        values["models"] = [x.strip() for x in a.models.split(",") if x.strip()]
    if a.modes:
        values["modes"] = [x.strip() for x in a.modes.split(",") if x.strip()]
        bad = set(values["modes"]) - {"embedded", "llm"}
        if bad:
            p.error(f"unknown modes {sorted(bad)}")
    if a.no_service:
        values["service"] = False
    values["service_env"] = dict(kv.split("=", 1) for kv in a.service_env)
    return BenchConfig(**values), bool(a.strict)


def main(argv: list[str] | None = None) -> None:
    cfg, strict = parse_args(argv)
    print(
        f"bench: levels {cfg.levels}, {cfg.duration_s:g} s per level, models {cfg.models}, "
        f"modes {cfg.modes}, "
        f"ttft {cfg.ttft_ms:g} ms, token {cfg.token_ms:g} ms, {cfg.tokens} tokens, {cfg.workers} worker(s)",
        flush=True,
    )
    result = run_bench(cfg)
    print()
    print(format_tables(result))
    print(f"\nwrote {result['files']['json']} and {result['files']['chart']} ({result['duration_s']} s)")
    if strict and not all(t["met"] for t in result["targets"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
