"""A run whose answer is returned whole (a non-streamed request), the same for every API."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from service.observability.metrics import RequestObserver
from service.runs.context import ListSink
from service.runs.events import RunEnded, RunEvent
from service.runs.execute import Runner, RunRequest, execute_run
from service.serving.errors import run_failure

CANCEL_WAIT_S = 5.0


async def run_to_end(
    runner: Runner,
    task: Sequence[BaseChatMessage],
    request: RunRequest,
    token: CancellationToken,
    observer: RequestObserver,
    name: str,
) -> tuple[list[RunEvent], RunEnded]:
    """Run the workflow to its end and return all its events (the last is the `RunEnded`).

    Raises:
        OpenAIError: the run failed (502/504/500); the request is counted with its outcome.
        asyncio.CancelledError: the caller was cancelled (the client went away); the run is stopped
            first and the request counted as cancelled.
    """
    sink = ListSink()
    # The run is a child task awaited through `asyncio.wait`, which does not pass a cancellation
    # on: when the client goes away, the token is cancelled first (stopping the agents' model
    # calls at once), then the run. Cancelling the run alone would make AgentChat wait in its
    # `finally` for the team to go idle, i.e. finish its current turns.
    run = asyncio.create_task(execute_run(runner, task, request, sink, token, observer), name=name)
    try:
        await asyncio.wait({run})
    except asyncio.CancelledError:
        token.cancel()
        run.cancel()
        await asyncio.wait({run}, timeout=CANCEL_WAIT_S)
        observer.finish("cancelled")
        raise
    ended = run.result()
    failure = run_failure(ended)
    if failure is not None:  # raised: the error handler counts a CoreFunctionError
        error, outcome = failure
        observer.finish(outcome)
        raise error
    return sink.events, ended
