"""Run a documented shell line that starts the service (`make serve`, ...) as a reader's shell does."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.server import is_ready


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to the shell, make and the gunicorn it started (one process group), SIGKILL after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(proc.pid):
            break
        os.killpg(proc.pid, sig)
        deadline = time.monotonic() + timeout
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            proc.poll()  # reap the shell itself, so its pid leaves the group
            time.sleep(0.1)
    proc.wait(timeout)


@contextmanager
def serving_shell(command: str, cwd: Path, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run `command` with bash in its own process group; yields the base URL once `/readyz` is 200.

    `env` must hold `HOST` and `PORT` (the Makefile passes them on to the service). Whatever the
    command started is stopped when the block ends.
    """
    base_url = f"http://{env['HOST']}:{env['PORT']}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, f"`{command}` exited:\n{log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"not ready in 90 s:\n{log_path.read_text()[-3000:]}"
                if is_ready(base_url):
                    break
                time.sleep(0.2)
            yield base_url
        finally:
            stop_group(proc)
