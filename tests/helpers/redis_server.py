"""A throwaway `redis-server` (the Debian package) on 127.0.0.1 and a free port, for one test."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from loadtests.stopping import StopOnExit, terminate
from tests.helpers.server import free_port

REDIS_SERVER = shutil.which("redis-server")

requires_redis = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (Debian package redis-server; `make system-deps` installs it)",
)


class RedisServer(StopOnExit):
    """`redis-server` without persistence; `url` is `redis://127.0.0.1:<port>/0`."""

    def __init__(self, directory: Path, port: int | None = None, startup_timeout: float = 15.0) -> None:
        assert REDIS_SERVER is not None
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        directory.mkdir(parents=True, exist_ok=True)
        self._log = open(directory / f"redis-{self.port}.log", "ab")  # noqa: SIM115 (child's lifetime)
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server not ready in {startup_timeout}s")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)

    def ping(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        terminate(self.proc, timeout)
        self._log.close()
