"""Clients people build with, installed from their registries, against a real server (issue 21):
the Vercel AI SDK (npm: `ai` 6.0.x + `@ai-sdk/openai` 3.0.x, Node), pydantic-ai, instructor and the
OpenAI Agents SDK. The teams' model is the scripted fake LLM, so what the upstream received is checked.

The AI SDK is installed with `npm ci` into `tests/clients/aisdk/node_modules` when missing (its
`package-lock.json` pins every version); the test is skipped where there is no `node`/`npm`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtests.scripted_llm import ScriptedLLMProcess, rule, start_scripted_llm_process
from tests.helpers.server import ServiceProcess, start_service

KEY = "sk-clients"
AISDK_DIR = Path(__file__).parent / "clients" / "aisdk"
NPM_TIMEOUT_S = 300
NODE_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedLLMProcess]:
    with start_scripted_llm_process(log_path=tmp_path_factory.mktemp("llm") / "scripted.log") as process:
        yield process


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLMProcess) -> Iterator[ServiceProcess]:
    """One worker; `direct` and demo-team's embedded model are the scripted LLM."""
    with start_service(
        tmp_path_factory.mktemp("service"),
        API_KEYS=KEY,
        DIRECT_MODEL="on",
        LLM_BASE_URL=llm.base_url,
        LLM_MODEL="scripted-model",
        LLM_API_KEY="sk-upstream",
    ) as process:
        yield process


def aisdk_installed() -> Path:
    """The AI SDK's folder, `npm ci` run there first when its node_modules are missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the Vercel AI SDK")
    if not (AISDK_DIR / "node_modules" / "ai").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=AISDK_DIR,
            check=True,
            timeout=NPM_TIMEOUT_S,
            capture_output=True,
        )
    return AISDK_DIR


def run_node(script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        ["node", script, *args],
        cwd=aisdk_installed(),
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_vercel_ai_sdk_two_turns_send_the_first_answer_back_by_reference(
    service: ServiceProcess, llm: ScriptedLLMProcess, mode: str
) -> None:
    llm.load_script([rule("First answer: AutoGen runs agent teams."), rule("Shorter: agent teams.")])
    result = run_node("two_turns.mjs", f"{service.base_url}/v1", KEY, "direct", mode)
    assert result["first"]["text"] == "First answer: AutoGen runs agent teams."
    assert result["second"]["text"] == "Shorter: agent teams."
    if mode == "stream":
        assert result["first"]["streamed"] == result["first"]["text"]
    # What the SDK sent on the second turn: the first answer as an item_reference, not its text.
    second_input = result["requests"][1]["input"]
    references = [item for item in second_input if item.get("type") == "item_reference"]
    assert references and all(item["id"].startswith(("msg_", "rs_")) for item in references)
    assert "First answer" not in json.dumps(second_input)
    # ... and the model saw it again as the assistant's earlier message.
    upstream = llm.requests()[-1]["messages"]
    said = [(message["role"], message.get("content")) for message in upstream]
    assert any("First answer: AutoGen runs agent teams." in str(content) for _, content in said), said
    assert said[-1] == ("user", "Say it shorter.")
