"""What AgentChat alone costs per run: the share of the service's CPU per stream that no serving layer
can remove without changing AutoGen.

A model's workflow is built and run in this process exactly as the service runs it (same registry, same
embedded model and timing, tokens delivered through the same side channel, to a sink that drops them; same
logging levels, runtime tracing decision and garbage-collector tuning), ``--concurrency`` runs at a time on
uvloop, with no HTTP, no request validation, no SSE and no metrics. ``make bench`` reports it beside the
service and the floor: service CPU per stream ~ floor (HTTP and chunks) + this (the agents) + the service's
own layer.

Run it: ``python -m loadtests.agentchat_cost --model demo-team --concurrency 64 --runs 256`` (prints JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import uvloop
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken

from service.config import Settings
from service.gc_tuning import tune_gc
from service.observability.logging import configure_logging
from service.observability.run_trace import traced_run
from service.observability.tracing import configure_tracing, decide_agent_runtime_tracing
from service.runs.agentchat import AgentChatTranslator
from service.runs.context import ListSink, RunContext, current_run_context
from service.runs.events import RunEvent
from service.workflows.registry import Workflow, WorkflowRegistry


class _DroppingRun(RunContext):
    """The side channel the model clients stream into, counting tokens and dropping them."""

    tokens: list[int]

    def offer_token(self, agent: str, text: str) -> list[RunEvent]:
        self.tokens[0] += 1
        return []

    async def model_called(
        self, agent: str, model: str, prompt_tokens: int, completion_tokens: int, finish_reason: str
    ) -> None:
        return None


async def _run_once(workflow: Workflow, prompt: str, tokens: list[int]) -> None:
    with traced_run(workflow.id, "cost") as trace:
        run = _DroppingRun(AgentChatTranslator(frozenset()), ListSink(), CancellationToken(), trace=trace)
        run.tokens = tokens
        context_token = current_run_context.set(run)
        try:
            runner = workflow.build()
            async for _ in runner.run_stream(task=[TextMessage(source="user", content=prompt)]):
                pass
        finally:
            current_run_context.reset(context_token)


async def _measure(workflow: Workflow, prompt: str, runs: int, concurrency: int) -> dict[str, Any]:
    slots = asyncio.Semaphore(concurrency)
    tokens = [0]

    async def one() -> None:
        async with slots:
            await _run_once(workflow, prompt, tokens)

    started_cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    cpu_s, elapsed = time.process_time() - started_cpu, time.perf_counter() - started
    return {
        "cpu_ms_per_run": round(cpu_s / runs * 1000.0, 3),
        "runs_per_s": round(runs / elapsed, 1),
        "tokens_per_run": round(tokens[0] / runs, 1),
    }


async def measure_agentchat(
    model: str, prompt: str, runs: int, concurrency: int, ttft_ms: float, token_ms: float
) -> dict[str, Any]:
    """Warm up, then time `runs` runs; the settings mirror a service worker's defaults."""
    settings = Settings(_env_file=None, demo_llm_ttft_ms=ttft_ms, demo_llm_token_ms=token_ms)  # type: ignore[call-arg]
    configure_logging("WARNING")
    decide_agent_runtime_tracing(settings.autogen_runtime_tracing, configure_tracing(settings))
    registry = WorkflowRegistry(settings)
    registry.load_defaults()
    workflow = registry.get(model)
    if workflow is None:
        raise SystemExit(f"unknown model {model!r}")
    tune_gc(settings)
    await _measure(workflow, prompt, max(8, runs // 4), concurrency)  # warm-up
    result = await _measure(workflow, prompt, runs, concurrency)
    await registry.aclose()
    return {"model": model, "concurrency": concurrency, "runs": runs, **result}


def main(argv: list[str] | None = None) -> None:
    description = __doc__.split("\n\n")[0]
    p = argparse.ArgumentParser(prog="python -m loadtests.agentchat_cost", description=description)
    p.add_argument("--model", default="demo-team")
    p.add_argument("--prompt", default="What does an agent team cost per request?")
    p.add_argument("--runs", type=int, default=256)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--token-ms", type=float, default=5.0)
    a = p.parse_args(argv)
    result = uvloop.run(measure_agentchat(a.model, a.prompt, a.runs, a.concurrency, a.ttft_ms, a.token_ms))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
