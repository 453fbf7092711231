"""What one run of a workflow costs on each agent runtime (`AGENT_RUNTIME`), in this process.

The workflow runs as the service runs it (`execute_run`, the same registry and embedded model,
tokens streamed through the run's side channel) into a sink that keeps nothing, one run at a time,
with no model latency, HTTP or SSE: what is left is AgentChat, the agent runtime and the run layer.

Under callgrind the count is deterministic, whatever else the machine does: run it twice with
different `--runs` and divide the difference of the instruction counts by the difference of the
runs (start-up and warm-up cancel out)::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python -m loadtests.runtime_cost --runs 5
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python -m loadtests.runtime_cost --runs 25

Without valgrind it prints the CPU time per run (noisy on a loaded machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any, Literal

from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken

from service.config import Settings
from service.gc_tuning import tune_gc
from service.observability.logging import configure_logging
from service.observability.tracing import configure_tracing, decide_agent_runtime_tracing
from service.runs.events import RunEvent
from service.runs.execute import execute_run
from service.workflows.handler_discovery import cache_handler_discovery
from service.workflows.registry import Workflow, WorkflowRegistry


class _Dropping:
    """A sink that keeps nothing (a client that reads everything at once)."""

    async def send(self, event: RunEvent) -> None:
        return None

    def offer(self, event: RunEvent) -> bool:
        return True


async def _runs(workflow: Workflow, prompt: str, runs: int) -> None:
    sink = _Dropping()
    for number in range(runs):
        request = workflow.run_request(f"cost-{number}", deadline_s=60, max_tokens=None)
        task = [TextMessage(source="user", content=prompt)]
        await execute_run(workflow.build(), task, request, sink, CancellationToken())


async def measure(
    model: str, runtime: Literal["lean", "default"], prompt: str, runs: int, warmup: int
) -> dict[str, Any]:
    settings = Settings(_env_file=None, agent_runtime=runtime)
    configure_logging("WARNING")
    decide_agent_runtime_tracing(settings.autogen_runtime_tracing, configure_tracing(settings))
    registry = WorkflowRegistry(settings)
    registry.load_defaults()
    cache_handler_discovery()
    workflow = registry.get(model)
    if workflow is None:
        raise SystemExit(f"unknown model {model!r}")
    tune_gc(settings)
    await _runs(workflow, prompt, warmup)
    started = time.process_time()
    await _runs(workflow, prompt, runs)
    cpu_s = time.process_time() - started
    await registry.aclose()
    return {
        "model": model,
        "runtime": workflow.agent_runtime,
        "runs": runs,
        "cpu_ms_per_run": round(cpu_s / max(runs, 1) * 1000.0, 3),
    }


def main(argv: list[str] | None = None) -> None:
    description = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m loadtests.runtime_cost", description=description)
    parser.add_argument("--model", default="demo-team")
    parser.add_argument("--runtime", choices=("lean", "default"), default="lean")
    parser.add_argument("--prompt", default="What does an agent team cost per request?")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.model, args.runtime, args.prompt, args.runs, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
