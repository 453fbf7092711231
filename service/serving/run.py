"""A run whose answer is returned whole (a non-streamed request), the same for every API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from autogen_agentchat.messages import BaseChatMessage

from service.runs.context import ListSink
from service.runs.events import RunEnded, RunEvent
from service.runs.execute import Runner, RunRequest, execute_run
from service.serving.errors import ClientGone, run_error
from service.serving.observed import ObservedSink
from service.serving.request_run import RequestRun

CANCEL_WAIT_S = 5.0


async def _stop(work: asyncio.Task[RunEnded], run: RequestRun) -> None:
    # The run is a child task awaited through `asyncio.wait`, which does not pass a cancellation
    # on: the token is cancelled first (stopping the agents' model calls at once), then the run.
    # Cancelling the run alone would make AgentChat wait in its `finally` for the team to go idle,
    # i.e. finish its current turns.
    run.token.cancel()
    work.cancel()
    await asyncio.wait({work}, timeout=CANCEL_WAIT_S)


async def run_to_end(
    runner: Runner,
    task: Sequence[BaseChatMessage],
    request: RunRequest,
    run: RequestRun,
    name: str,
    client_gone: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[RunEvent], RunEnded]:
    """Run the workflow to its end and return all its events (the last is the `RunEnded`), raced
    against `client_gone` (the client's disconnect).

    Raises:
        OpenAIError: the run failed (502/504/500).
        ClientGone: the client went away first (the run is stopped).
        asyncio.CancelledError: the caller was cancelled (the run is stopped first).
    """
    sink = ListSink()
    work = asyncio.create_task(
        execute_run(runner, task, request, ObservedSink(sink, run.observer), run.token), name=name
    )
    gone = asyncio.ensure_future(client_gone()) if client_gone is not None else None
    try:
        await asyncio.wait({work} if gone is None else {work, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _stop(work, run)
        raise
    finally:
        if gone is not None:
            gone.cancel()
    if not work.done():
        await _stop(work, run)
        raise ClientGone
    ended = work.result()
    error = run_error(ended)
    if error is not None:  # raised: the error handler counts a CoreFunctionError
        raise error
    return sink.events, ended
