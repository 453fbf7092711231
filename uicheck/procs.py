"""Starting the check's servers: spawned at once (so they can always be stopped), then awaited."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from loadtests.procs import ServerProcess


def spawn(
    name: str, cmd: list[str], env: Mapping[str, str] | None, cwd: Path, log_path: Path, port: int
) -> ServerProcess:
    """Start ``cmd`` in its own session (``stop()`` ends its whole process group), output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - closed by ServerProcess.stop
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd),
            start_new_session=True,
        )
    except BaseException:
        log.close()
        raise
    return ServerProcess(name, proc, port, log_path, log)


async def wait_ready(server: ServerProcess, path: str, timeout_s: float) -> None:
    """Poll ``GET path`` until it answers 200; fail at once if the process exits. Cancellable."""
    deadline = time.monotonic() + timeout_s
    last = ""
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                tail = server.tail_log(30)
                raise RuntimeError(
                    f"{server.name} exited with code {server.proc.returncode}; its log ends:\n{tail}"
                )
            try:
                response = await client.get(f"{server.url}{path}")
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.25)
    raise TimeoutError(f"{server.name} did not answer {path} within {timeout_s:.0f} s ({last})")
