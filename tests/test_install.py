"""`make serve` from scratch: a fresh venv with what serving needs and none of the dev tools, serving.

The venv is made by the Makefile itself (`make serve VENV=<tmp>`), so this checks the recipe a user
runs, whatever the runtime dependencies become. The pip cache makes it take about a minute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import distributions
from tests.helpers.server import REPO_ROOT, ServiceProcess, service_env

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import service
for module in pkgutil.walk_packages(service.__path__, "service."):
    if module.name not in ("service.__main__", "service.gunicorn_conf"):
        importlib.import_module(module.name)
print(service.__file__)
"""


@pytest.fixture(scope="module")
def make_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, Path]]:
    """`make serve` with a fresh VENV, answering on a free port; stopped (SIGTERM to make and
    gunicorn) at the end."""
    tmp = tmp_path_factory.mktemp("make-serve")
    venv = tmp / "venv"
    env = {k: v for k, v in service_env(tmp).items() if not k.startswith("MAKE") and k != "VIRTUAL_ENV"}
    started = time.monotonic()
    service = ServiceProcess(
        env,
        tmp / "make-serve.log",
        startup_timeout=840,
        command=["make", "--no-print-directory", f"VENV={venv}", "serve"],
    )
    print(f"make serve with a fresh venv: first ready answer after {time.monotonic() - started:.0f} s")
    try:
        yield service, venv
    finally:
        if service.proc.poll() is None:
            os.killpg(service.proc.pid, signal.SIGTERM)
        service.stop()


def test_fresh_serve_venv_holds_no_dev_tools(make_serve: tuple[ServiceProcess, Path]) -> None:
    _, venv = make_serve
    env = distributions.probe([str(venv / "bin" / "python"), "-c"])
    distributions.assert_serving_only(env, "make serve's venv")
    assert distributions.dev_extra() - env.names, "the dev extra is not told apart from the runtime"
    tools = [name for name in distributions.DEV_EXECUTABLES if (venv / "bin" / name).exists()]
    assert not tools, f"dev tools in make serve's venv: {tools}"
    assert (venv / "bin" / "autogen-service").exists()


def test_fresh_serve_venv_agrees_with_the_lock_and_the_test_venv(
    make_serve: tuple[ServiceProcess, Path],
) -> None:
    """`make serve` installs requirements.lock's versions, the ones the tests run (the image is
    held to the same lock by tests/test_image.py)."""
    _, venv = make_serve
    serve_venv = distributions.probe([str(venv / "bin" / "python"), "-c"])
    distributions.assert_agree(
        {"make serve's venv": serve_venv, "the test venv": distributions.this_environment()},
        complete=["make serve's venv"],
    )


def test_fresh_serve_venv_imports_every_service_module(
    make_serve: tuple[ServiceProcess, Path], tmp_path: Path
) -> None:
    _, venv = make_serve
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", IMPORT_EVERY_MODULE],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The editable install: the service served is this checkout's.
    assert Path(result.stdout.strip()).parent == REPO_ROOT / "service"


def test_make_serve_answers_a_chat_completion(make_serve: tuple[ServiceProcess, Path]) -> None:
    service, _ = make_serve
    with httpx.Client(base_url=service.base_url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        body = {"model": "demo-team", "messages": [{"role": "user", "content": "What is AutoGen?"}]}
        answer = client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as stream:
            assert stream.status_code == 200
            events = [
                line.removeprefix("data: ") for line in stream.iter_lines() if line.startswith("data: ")
            ]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert any(choice["delta"].get("content") for chunk in chunks for choice in chunk["choices"])
