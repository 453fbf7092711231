"""Stopping what a test or a benchmark started: one context-manager base, one way to end a process."""

from __future__ import annotations

import os
import signal
import subprocess
from types import TracebackType
from typing import Self


class StopOnExit:
    """A handle usable in `with`: leaving the block calls `stop()`."""

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def terminate(proc: subprocess.Popen[bytes], timeout: float, *, kill_group: bool = False) -> None:
    """SIGTERM, up to `timeout` s to exit, then SIGKILL (to its whole process group with `kill_group`)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if kill_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(timeout)
