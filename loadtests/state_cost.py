"""What keeping a team's state costs per turn: saving it after a turn and loading it before the next,
with the embedded SQLite store and with Redis (the Responses API's `previous_response_id` path).

A conversation of `--turns` turns is run with a model's team (default `demo-team` on the embedded
model, no LLM), each turn resumed from the state the previous one saved, as the service does. After
each turn, the save is measured `--repeat` times (AgentChat `save_state()`, JSON and compression, the
store's transaction with the response record), then the load (the store's read, decompression and
JSON, AgentChat `load_state()` into a freshly built team; the build itself, which every request pays
with or without state, is reported apart). Bounded: turns x repeat operations per store, nothing else.

    python -m loadtests.state_cost --turns 10 --repeat 30              # SQLite, and Redis if installed
    python -m loadtests.state_cost --redis-url redis://127.0.0.1:6379/15 --json state-cost.json

Prints a table per store (ms per operation: median and p95; bytes of the state's JSON and as stored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from autogen_agentchat.messages import TextMessage

from loadtests.procs import free_port
from service.config import Settings
from service.state import ResponseRecord, StateStore, Turn, decode_state, encode_state, open_state_store
from service.workflows.registry import Workflow, WorkflowRegistry

QUESTIONS = (
    "What is AutoGen?",
    "How do its agents take turns?",
    "And how does a team stop?",
    "Can a person join the conversation?",
    "How is the state of a team kept between turns?",
)


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered) * 1000, 3), "p95": round(p95 * 1000, 3)}


def _record(response_id: str, model: str) -> ResponseRecord:
    return ResponseRecord(
        id=response_id,
        owner="bench",
        model=model,
        created_at=int(time.time()),
        response={"id": response_id, "object": "response", "status": "completed", "output": []},
        input_items=[],
    )


async def measure(
    store: StateStore, workflow: Workflow, turns: int, repeat: int, max_bytes: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    previous: str | None = None
    for turn in range(1, turns + 1):
        team = workflow.build()
        if previous is not None:
            data = await store.load_state(previous)
            assert data is not None
            await team.load_state(decode_state(data, max_bytes))
        started = time.perf_counter()
        await team.run(task=[TextMessage(source="user", content=QUESTIONS[(turn - 1) % len(QUESTIONS)])])
        run_s = time.perf_counter() - started
        saves: list[float] = []
        size = stored = 0
        for index in range(repeat):
            response_id = f"resp_bench_{turn}_{index}"
            started = time.perf_counter()
            data, size = encode_state(await team.save_state(), max_bytes)
            await store.save_turn(Turn(state=data, response=_record(response_id, workflow.id)))
            saves.append(time.perf_counter() - started)
            stored = len(data)
        previous = f"resp_bench_{turn}_0"
        loads: list[float] = []
        builds: list[float] = []
        for _ in range(repeat):
            started = time.perf_counter()
            fresh = workflow.build()
            built = time.perf_counter()
            data = await store.load_state(previous)
            assert data is not None
            await fresh.load_state(await asyncio.to_thread(decode_state, data, max_bytes))
            loads.append(time.perf_counter() - built)
            builds.append(built - started)
        rows.append(
            {
                "turn": turn,
                "state_json_bytes": size,
                "stored_bytes": stored,
                "save_ms": _ms(saves),
                "load_ms": _ms(loads),
                "build_ms": _ms(builds),
                "run_ms": round(run_s * 1000, 1),
            }
        )
    return rows


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway `redis-server` (no persistence) on a free port, or None when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


@contextlib.asynccontextmanager
async def opened(uri: str) -> AsyncIterator[StateStore]:
    store = await open_state_store(uri, 3600)
    try:
        yield store
    finally:
        await store.close()


def table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"### {name}",
        "",
        "| turn | state JSON bytes | stored bytes | save ms (median / p95) | load ms (median / p95) "
        "| build ms | team run ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['turn']} | {row['state_json_bytes']:,} | {row['stored_bytes']:,} | "
            f"{row['save_ms']['median']} / {row['save_ms']['p95']} | "
            f"{row['load_ms']['median']} / {row['load_ms']['p95']} | "
            f"{row['build_ms']['median']} | {row['run_ms']} |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    registry = WorkflowRegistry(settings)
    registry.load_defaults()
    workflow = registry.get(args.model)
    if workflow is None:
        raise SystemExit(f"unknown model {args.model!r}")
    results: dict[str, Any] = {"model": args.model, "turns": args.turns, "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as directory:
        async with opened(f"sqlite:///{Path(directory) / 'state.sqlite3'}") as store:
            results["sqlite"] = await measure(
                store, workflow, args.turns, args.repeat, settings.state_max_bytes
            )
    with redis_server() if args.redis_url is None else contextlib.nullcontext(args.redis_url) as url:
        if url is not None:
            async with opened(url) as store:
                results["redis"] = await measure(
                    store, workflow, args.turns, args.repeat, settings.state_max_bytes
                )
    await registry.aclose()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo-team")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--redis-url", default=None, help="an existing Redis (default: start redis-server)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if not (1 <= args.turns <= 100 and 1 <= args.repeat <= 1000):
        parser.error("--turns 1-100 and --repeat 1-1000")
    results = asyncio.run(main_async(args))
    for name in ("sqlite", "redis"):
        if name in results:
            print(table(f"{results['model']}, {name}", results[name]), end="\n\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
