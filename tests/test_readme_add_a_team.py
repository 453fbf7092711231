"""The README's "Add a team" example, run exactly as written.

Its Python block runs with the checkout's `.venv/bin/python` and writes `workflows/research-team.json`;
its shell line (`WORKFLOWS_DIR=$PWD/workflows make serve`) serves that folder; the new team is listed
and answers through the official SDK. Both run in a folder that stands for the reader's checkout
(the Makefile, `mk/`, `pyproject.toml`, `requirements.lock` and `.venv` linked from this one), so
the test writes nothing into the repository.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers.server import REPO_ROOT, service_env

pytestmark = pytest.mark.timeout(240)

README = REPO_ROOT / "README.md"
CHECKOUT_FILES = ("Makefile", "mk", "pyproject.toml", "requirements.lock", ".venv")


def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    # The section's own text: up to the next heading (its ### subsections are other subjects).
    return re.split(r"\n#{2,3} ", text.split(f"\n## {title}\n", 1)[1], maxsplit=1)[0]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to make and the gunicorn it started (one process group), SIGKILL after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(proc.pid):
            break
        os.killpg(proc.pid, sig)
        deadline = time.monotonic() + timeout
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            proc.poll()  # reap make itself, so its pid leaves the group
            time.sleep(0.1)
    proc.wait(timeout)


@contextmanager
def run_shell(command: str, cwd: Path, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run the README's shell line; yields the base URL once `/readyz` answers 200."""
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
                try:
                    if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            yield base_url
        finally:
            _stop_group(proc)


def test_the_add_a_team_example_works_as_written(tmp_path: Path) -> None:
    section = readme_section("Add a team")
    (script,) = code_blocks(section, "python")
    (shell,) = code_blocks(section, "bash")
    (command,) = [line.split("#", 1)[0].strip() for line in shell.splitlines() if line.strip()]

    # `make serve` must not try to reinstall into the linked venv from the stand-in checkout.
    stamp = subprocess.run(["make", "-q", ".venv/.installed"], cwd=REPO_ROOT, capture_output=True)
    if stamp.returncode != 0:
        pytest.fail("the .venv is older than pyproject.toml: run `make install` first")

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in CHECKOUT_FILES:
        (checkout / name).symlink_to(REPO_ROOT / name)
    written = subprocess.run(
        [".venv/bin/python", "-c", script], cwd=checkout, capture_output=True, text=True, timeout=120
    )
    assert written.returncode == 0, written.stderr
    assert (checkout / "workflows" / "research-team.json").is_file()

    # A make of its own, as a reader's shell runs it (not a sub-make of `make test`).
    env = {
        key: value
        for key, value in service_env(tmp_path).items()
        if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }
    with run_shell(command, checkout, env, tmp_path / "make-serve.log") as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        models = {model.id: model for model in client.models.list()}
        assert "research-team" in models, f"not loaded:\n{(tmp_path / 'make-serve.log').read_text()[-3000:]}"
        assert models["research-team"].model_extra["description"].startswith("A researcher answers")

        # The run ends after the critic's answer, also when the user writes the word TERMINATE.
        for question in ("What is AutoGen?", "What is AutoGen? TERMINATE"):
            answer = client.chat.completions.create(
                model="research-team", messages=[{"role": "user", "content": question}]
            )
            assert answer.choices[0].finish_reason == "stop"
            assert answer.choices[0].message.content.startswith("Review: the draft answers"), answer

        stream = client.chat.completions.create(
            model="research-team",
            messages=[{"role": "user", "content": "What is AutoGen?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert "Review: the draft answers" in streamed
        assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
