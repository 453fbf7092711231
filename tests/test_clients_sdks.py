"""Clients people build with, installed from their registries, against a real server (issue 21):
the Vercel AI SDK (npm: `ai` 6.0.x + `@ai-sdk/openai` 3.0.x, Node), pydantic-ai, instructor (in a venv
of its own: its pins conflict with the dev tools') and the OpenAI Agents SDK. The teams' model is the
scripted fake LLM, so what the upstream received is checked.

The AI SDK is installed with `npm ci` into `tests/clients/aisdk/node_modules` when missing (its
`package-lock.json` pins every version); the test is skipped where there is no `node`/`npm`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from loadtests.scripted_llm import Script, ScriptedLLMProcess, rule, start_scripted_llm_process
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


# --------------------------------------------------------------------------- structured output
CITY = {"city": "Paris", "population": 2100000}
TEXT_ANSWER = "Paris, the capital of France, has about 2.1 million people."


class City(BaseModel):
    city: str
    population: int


def json_script(llm: ScriptedLLMProcess) -> None:
    """JSON when JSON is asked (the formatting call), the text answer otherwise."""
    llm.reset()
    llm.load_script(Script(rules=[rule({"json": CITY}, json=True, times=None)], default=TEXT_ANSWER))


def json_calls(llm: ScriptedLLMProcess) -> list[dict[str, Any]]:
    return [record for record in llm.requests() if record["response_format"]]


def test_pydantic_ai_native_output_gets_the_formatted_answer(
    service: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=f"{service.base_url}/v1", api_key=KEY)
    for model in (
        OpenAIChatModel("direct", provider=provider),
        OpenAIResponsesModel("direct", provider=provider),
    ):
        json_script(llm)
        result = Agent(model, output_type=NativeOutput(City)).run_sync("Tell me about Paris.")
        assert result.output == City(**CITY)
        # One run: the answer and one formatting call with the schema, no retries.
        assert len(llm.requests()) == 2
        [formatting] = json_calls(llm)
        assert formatting["response_format"]["type"] == "json_schema"


def test_pydantic_ai_tool_output_is_refused_by_name(service: ServiceProcess, llm: ScriptedLLMProcess) -> None:
    """pydantic-ai's default output mode forces a tool call of its own (`tool_choice: required`): a
    team never calls a client's tool, so that is a clear 400, not a silently ignored schema."""
    from pydantic_ai import Agent
    from pydantic_ai.exceptions import ModelHTTPError
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=f"{service.base_url}/v1", api_key=KEY)
    llm.reset()
    with pytest.raises(ModelHTTPError) as refused:
        Agent(OpenAIChatModel("direct", provider=provider), output_type=City).run_sync("Paris?")
    assert refused.value.status_code == 400
    assert "tool_choice" in str(refused.value.body)
    assert llm.requests() == []  # nothing ran


def test_openai_agents_sdk_client_tools_are_never_called_and_required_is_refused(
    service: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    import asyncio

    import openai
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # no trace export (it would go to api.openai.com)
    called: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather of a city."""
        called.append(city)
        return "sunny"

    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=f"{service.base_url}/v1", api_key=KEY, max_retries=0)
        model = OpenAIResponsesModel("direct", openai_client=client)
        llm.reset()
        llm.load_script([rule("It is sunny in Paris.")])
        agent = Agent(name="assistant", instructions="Answer briefly.", model=model, tools=[get_weather])
        result = await Runner.run(agent, "What is the weather in Paris?")
        assert result.final_output == "It is sunny in Paris."
        assert called == []  # documented: client tools are accepted and never called
        assert "tools" not in llm.requests()[0] or not llm.requests()[0]["tools"]

        forced = Agent(
            name="assistant",
            model=model,
            tools=[get_weather],
            model_settings=ModelSettings(tool_choice="required"),
        )
        with pytest.raises(openai.BadRequestError) as refused:
            await Runner.run(forced, "What is the weather in Paris?")
        assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "tool_choice"

        json_script(llm)
        typed = Agent(name="assistant", model=model, output_type=City)
        result = await Runner.run(typed, "Tell me about Paris.")
        assert result.final_output == City(**CITY)

    asyncio.run(run())


INSTRUCTOR_DIR = Path(__file__).parent / "clients" / "instructor"
PIP_TIMEOUT_S = 600


def instructor_python() -> Path:
    """instructor's own venv (its pins conflict with the service's dev tools), made when missing."""
    python = INSTRUCTOR_DIR / ".venv" / "bin" / "python"
    if not (INSTRUCTOR_DIR / ".venv" / "ok").exists():
        subprocess.run([sys.executable, "-m", "venv", str(INSTRUCTOR_DIR / ".venv")], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(INSTRUCTOR_DIR / "requirements.txt")],
            check=True,
            timeout=PIP_TIMEOUT_S,
            capture_output=True,
        )
        (INSTRUCTOR_DIR / ".venv" / "ok").touch()
    return python


@pytest.mark.parametrize("mode", ["JSON_SCHEMA", "JSON", "TOOLS"])
def test_instructor_gets_its_model_in_one_run(
    service: ServiceProcess, llm: ScriptedLLMProcess, mode: str
) -> None:
    python = instructor_python()
    json_script(llm)
    done = subprocess.run(
        [str(python), str(INSTRUCTOR_DIR / "extract.py"), f"{service.base_url}/v1", KEY, "direct", mode],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if mode == "TOOLS":
        # instructor's default forces its tool: refused by name at once, never retried as a team run.
        assert result["error"]["status"] == 400 and result["error"]["param"] == "tool_choice"
        assert llm.requests() == []
        return
    assert result["city"] == CITY
    assert len(llm.requests()) == 2  # the answer and the formatting call: no retry
