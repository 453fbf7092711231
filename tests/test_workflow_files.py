"""Workflow files are code: the guard, shared tools and MCP sessions, TERMINATE, load errors, exports.

In-process: the real app over httpx's ASGI transport, agents against the scripted fake LLM (a thread).
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from autogen_agentchat.agents import AssistantAgent, CodeExecutorAgent, UserProxyAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core.tools import FunctionTool
from autogen_ext.code_executors.local import LocalCommandLineCodeExecutor
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.tools.mcp import McpWorkbench, StdioServerParams

from loadtests.scripted_llm import Reply, ScriptedLLMThread, ToolCall, rule, start_scripted_llm_thread
from service.app import create_app
from service.observability.logging import ServiceJsonFormatter
from service.workflows.mcp import SharedMcpWorkbench
from service.workflows.registry import WorkflowRegistry
from service.workflows.shared import get as shared_instance
from tests.conformance.shapes import MCP_SERVER, client_for
from tests.helpers.app import make_settings, running_app
from tests.helpers.server import REPO_ROOT

QUESTION = [{"role": "user", "content": "How do I TERMINATE a process on Linux?"}]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMThread]:
    with start_scripted_llm_thread() as llm:
        yield llm


@pytest.fixture(autouse=True)
def openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exported files carry a masked key: their clients read OPENAI_API_KEY, as AutoGen's do."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-corpus")


@pytest.fixture
def llm(server: ScriptedLLMThread) -> ScriptedLLMThread:
    server.reset()
    server.load_script({"default": "OK"})
    return server


def write(directory: Path, name: str, component: Any) -> Path:
    path = directory / f"{name}.json"
    document = (
        component if isinstance(component, dict) else component.dump_component().model_dump(mode="json")
    )
    path.write_text(json.dumps(document))
    return path


async def ask(
    http: httpx.AsyncClient, model: str, messages: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    response = await http.post(
        "/v1/chat/completions", json={"model": model, "messages": messages or QUESTION}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def tool_results(body: dict[str, Any], tool: str) -> list[str]:
    transcript = body["choices"][0]["message"]["reasoning_content"] or ""
    return re.findall(rf"← `{tool}` (?:returned|failed): (.*)", transcript)


# --- providers ---------------------------------------------------------------------------------
def test_a_provider_outside_the_allowlist_is_refused_before_it_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "planted_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Team: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    document = {"provider": "planted_module.Team", "component_type": "team", "config": {}}
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    write(workflows, "planted", document)
    report = WorkflowRegistry(make_settings(workflows_dir=workflows)).load_defaults()
    reason = next(reason for origin, reason in report.failed.items() if origin.endswith("planted.json"))
    assert "'planted_module.Team' is not allowed" in reason and "WORKFLOW_ALLOWED_PROVIDERS" in reason
    assert not marker.exists()  # never imported
    allowed = WorkflowRegistry(
        make_settings(workflows_dir=workflows, workflow_allowed_providers="planted_module")
    )
    allowed_report = allowed.load_defaults()
    assert marker.exists()  # imported once allowed (and then refused: it is not a component)
    assert "not allowed" not in next(iter(allowed_report.failed.values()))


def test_code_execution_is_refused_at_load_unless_enabled(tmp_path: Path, llm: ScriptedLLMThread) -> None:
    coder = AssistantAgent("coder", model_client=client_for(llm.base_url))
    with pytest.warns(UserWarning):  # AgentChat's own warning about local execution
        executor = CodeExecutorAgent(
            "executor", code_executor=LocalCommandLineCodeExecutor(work_dir=tmp_path)
        )
    team = RoundRobinGroupChat([coder, executor], max_turns=2)
    registry = WorkflowRegistry(make_settings())
    with pytest.raises(ValueError, match=r"executes code.*ALLOW_CODE_EXECUTION=true"):
        registry.register_component("coding", team.dump_component())
    assert registry.get("coding") is None
    enabled = WorkflowRegistry(make_settings(allow_code_execution=True))
    assert enabled.register_component("coding", team.dump_component()).agent_names == ("coder", "executor")


def planted_tool(marker: Path, top_level: str = "") -> dict[str, Any]:
    """A FunctionTool whose `global_imports` and top-level source leave a mark when they run."""
    tool = FunctionTool(noop, description="no-op").dump_component().model_dump(mode="json")
    tool["config"]["global_imports"] = ["pathlib"]
    tool["config"]["source_code"] = (
        f"pathlib.Path({str(marker)!r}).touch()\n{top_level}\ndef noop(city: str) -> str:\n    return city\n"
    )
    return tool


def tooled_agent(llm: ScriptedLLMThread, tool: dict[str, Any]) -> dict[str, Any]:
    agent = AssistantAgent(
        "tooled", model_client=client_for(llm.base_url), tools=[FunctionTool(noop, "no-op")]
    )
    document = agent.dump_component().model_dump(mode="json")
    document["config"]["workbench"][0]["config"]["tools"] = [tool]
    return document


def test_function_tools_and_stdio_mcp_servers_load_only_where_allowed_and_are_logged(
    tmp_path: Path, llm: ScriptedLLMThread, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "tool-code-ran"
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    write(workflows, "tooled", tooled_agent(llm, planted_tool(marker)))
    write(workflows, "mcp", mcp_agent(llm))
    report = WorkflowRegistry(make_settings(workflows_dir=workflows)).load_defaults()
    reasons = {Path(origin).stem: reason for origin, reason in report.failed.items()}
    assert "FunctionTool 'noop'" in reasons["tooled"] and "ALLOW_FUNCTION_TOOLS=true" in reasons["tooled"]
    assert "stdio MCP server" in reasons["mcp"] and "ALLOW_STDIO_MCP=true" in reasons["mcp"]
    assert str(MCP_SERVER) in reasons["mcp"]  # the command it would have started
    assert not marker.exists()  # neither the global_imports nor the source ran
    assert {"demo-team", "echo"} <= set(report.loaded)  # the built-ins need neither
    # Each setting opens its own kind only.
    only_tools = WorkflowRegistry(make_settings(workflows_dir=workflows, allow_function_tools=True))
    with pytest.warns(UserWarning):  # AgentChat warns that a FunctionTool's source is executed
        partial = only_tools.load_defaults()
    assert "tooled" in partial.loaded and any(origin.endswith("mcp.json") for origin in partial.failed)
    assert marker.exists()
    caplog.set_level(logging.INFO)
    caplog.clear()  # the lines of the loads above (logged when an earlier test left INFO on)
    both = WorkflowRegistry(
        make_settings(workflows_dir=workflows, allow_function_tools=True, allow_stdio_mcp=True)
    )
    with pytest.warns(UserWarning):
        assert {"tooled", "mcp"} <= set(both.load_defaults().loaded)
    lines = [
        json.loads(ServiceJsonFormatter().format(record))
        for record in caplog.records
        if record.getMessage() == "code-bearing workflow component loading"
    ]
    by_kind = {line["kind"]: line for line in lines}
    assert by_kind["function_tool"]["model"] == "tooled" and by_kind["function_tool"]["component"] == "noop"
    assert "pathlib" in by_kind["function_tool"]["detail"]
    assert by_kind["function_tool"]["source"].endswith("tooled.json")
    assert by_kind["stdio_mcp"]["model"] == "mcp" and str(MCP_SERVER) in by_kind["stdio_mcp"]["detail"]
    assert len(lines) == 2  # one line per component, not per agent that holds it


def test_the_k8s_config_says_which_code_it_loads_and_its_workflows_need_none() -> None:
    env = dict(
        line.split("=", 1)
        for line in (REPO_ROOT / "k8s/base/config.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    settings = {
        name: env[name] for name in ("ALLOW_FUNCTION_TOOLS", "ALLOW_STDIO_MCP", "ALLOW_CODE_EXECUTION")
    }
    assert settings == dict.fromkeys(settings, "false")  # written out, not left to the defaults
    registry = WorkflowRegistry(
        make_settings(
            workflows_dir=REPO_ROOT / "k8s/base/workflows",
            **{name.lower(): value == "true" for name, value in settings.items()},
        )
    )
    report = registry.load_defaults()
    assert report.failed == {} and {"assistant", "demo-team", "echo"} <= set(report.loaded)


@pytest.mark.parametrize(
    "provider",
    [
        "service.__main__.main",  # importing it would start a whole server in the worker
        "service.cli.main",
        "service.config.Settings",
        "autogen_core.CancellationToken",  # an allowed package, but not a component class
        "autogen_agentchat.ui.Console",
    ],
)
async def test_only_component_classes_load_and_the_service_still_boots(tmp_path: Path, provider: str) -> None:
    before = "service.__main__" in sys.modules
    write(tmp_path, "bad", {"provider": provider, "component_type": "team", "config": {}})
    app = create_app(make_settings(workflows_dir=tmp_path))
    async with running_app(app) as http:
        models = {model["id"] for model in (await http.get("/v1/models")).json()["data"]}
        assert {"demo-team", "echo"} <= models and "bad" not in models
        assert (await ask(http, "echo"))["choices"][0]["message"]["content"] == QUESTION[0]["content"]
    assert ("service.__main__" in sys.modules) == before  # never imported
    report = WorkflowRegistry(make_settings(workflows_dir=tmp_path)).load_defaults()
    reason = next(reason for origin, reason in report.failed.items() if origin.endswith("bad.json"))
    assert provider in reason and ("is not allowed" in reason or "not an AutoGen component class" in reason)


@pytest.mark.parametrize("raised", ["SystemExit(3)", "KeyboardInterrupt()", "GeneratorExit()"])
def test_a_file_that_raises_anything_while_loading_is_skipped_and_the_others_load(
    tmp_path: Path, llm: ScriptedLLMThread, monkeypatch: pytest.MonkeyPatch, raised: str
) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    write(workflows, "raises", tooled_agent(llm, planted_tool(tmp_path / "ran", f"raise {raised}")))
    # An allowed package of the operator's whose import raises the same.
    (tmp_path / "planted_exit.py").write_text(f"raise {raised}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    write(workflows, "imports", {"provider": "planted_exit.Team", "component_type": "team", "config": {}})
    write(workflows, "fine", tooled_agent(llm, planted_tool(tmp_path / "fine-ran")))
    settings = make_settings(
        workflows_dir=workflows, allow_function_tools=True, workflow_allowed_providers="planted_exit"
    )
    with pytest.warns(UserWarning):
        report = WorkflowRegistry(settings).load_defaults()
    reasons = {Path(origin).stem: reason for origin, reason in report.failed.items()}
    name = raised.split("(")[0]
    assert name in reasons["raises"] and name in reasons["imports"]
    assert {"fine", "demo-team", "echo"} <= set(report.loaded)


# --- shared tools ------------------------------------------------------------------------------
def noop(city: str) -> str:
    return city


def test_a_function_tools_source_runs_once_per_worker_not_per_request(llm: ScriptedLLMThread) -> None:
    counted = FunctionTool(noop, description="no-op").dump_component()
    counted.config["source_code"] = (
        "import builtins\n"
        "builtins.CORPUS_TOOL_LOADS = getattr(builtins, 'CORPUS_TOOL_LOADS', 0) + 1\n"
        "def noop(city: str) -> str:\n    return city\n"
    )
    client = client_for(llm.base_url)
    agent = AssistantAgent("tooled", model_client=client, tools=[FunctionTool(noop, "no-op")])
    document = agent.dump_component().model_dump(mode="json")
    document["config"]["workbench"][0]["config"]["tools"] = [counted.model_dump(mode="json")]
    registry = WorkflowRegistry(make_settings(allow_function_tools=True))
    with pytest.warns(UserWarning):  # AgentChat warns that a FunctionTool's source is executed
        workflow = registry.register_component("tooled", document)
    loads = builtins.CORPUS_TOOL_LOADS  # type: ignore[attr-defined]
    for _ in range(5):
        workflow.build()
    assert builtins.CORPUS_TOOL_LOADS == loads == 1  # type: ignore[attr-defined]


# --- MCP ---------------------------------------------------------------------------------------
def mcp_agent(llm: ScriptedLLMThread) -> AssistantAgent:
    workbench = McpWorkbench(
        StdioServerParams(command=sys.executable, args=[str(MCP_SERVER)], read_timeout_seconds=20)
    )
    return AssistantAgent(
        "mcp_user",
        model_client=client_for(llm.base_url),
        workbench=workbench,
        reflect_on_tool_use=True,
        system_message="You use MCP tools.",
    )


def call_tool_script(tool: str) -> list[Any]:
    return [
        rule(Reply(tool_calls=[ToolCall(name=tool, arguments={})]), system="You use MCP tools.", tools=True),
        rule("Done.", system="You use MCP tools.", last_role="tool"),
    ]


async def test_an_mcp_server_is_shared_by_requests_and_restarted_when_it_dies(
    tmp_path: Path, llm: ScriptedLLMThread
) -> None:
    write(tmp_path, "mcp", mcp_agent(llm))
    app = create_app(make_settings(workflows_dir=tmp_path, llm_api_key="unused", allow_stdio_mcp=True))
    async with running_app(app) as http:
        workbench = next(
            instance
            for reference in app.state.serving.registry._shared_references
            if isinstance(instance := shared_instance(reference), SharedMcpWorkbench)
        )
        assert workbench.starts == 1  # started with the worker, before any request
        pids = []
        for _ in range(3):
            llm.load_script(call_tool_script("pid"))
            pids += tool_results(await ask(http, "mcp"), "pid")
        assert (
            len(pids) == 3 and len(set(pids)) == 1 and workbench.starts == 1
        )  # one server, not one per request
        llm.load_script(call_tool_script("crash"))
        crashed = await ask(http, "mcp")
        assert crashed["choices"][0]["message"]["content"] == "Done."  # the failed call is the tool's error
        llm.load_script(call_tool_script("pid"))
        after = tool_results(await ask(http, "mcp"), "pid")
        assert after and after[0] != pids[0] and workbench.starts == 2  # a new session on the next use


# --- TERMINATE ---------------------------------------------------------------------------------
async def test_terminate_in_the_question_neither_stops_the_team_nor_disappears() -> None:
    async with running_app(create_app(make_settings())) as http:
        team = await ask(http, "demo-team")
        echo = await ask(http, "echo")
    assert team["choices"][0]["message"]["name"] == "reviewer"
    assert team["choices"][0]["message"]["content"].startswith("Review:")
    assert echo["choices"][0]["message"]["content"] == QUESTION[0]["content"]


async def test_text_mention_without_sources_is_warned_about_and_sources_are_honoured(
    tmp_path: Path, llm: ScriptedLLMThread, caplog: pytest.LogCaptureFixture
) -> None:
    agent = AssistantAgent("answerer", model_client=client_for(llm.base_url), system_message="You answer.")
    team = RoundRobinGroupChat(
        [agent], termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(3)
    )
    write(tmp_path, "unscoped", team)
    scoped = team.dump_component().model_dump(mode="json")
    for condition in scoped["config"]["termination_condition"]["config"]["conditions"]:
        if condition["provider"].endswith("TextMentionTermination"):
            condition["config"]["sources"] = ["answerer"]
    write(tmp_path, "scoped", scoped)
    caplog.set_level(logging.WARNING)
    async with running_app(create_app(make_settings(workflows_dir=tmp_path))) as http:
        warnings = [r for r in caplog.records if r.getMessage() == "workflow warning"]
        assert [r.model for r in warnings] == ["unscoped"]  # type: ignore[attr-defined]
        assert "has no 'sources'" in warnings[0].reason  # type: ignore[attr-defined]
        llm.load_script([rule("Send SIGTERM with kill. TERMINATE", system="You answer.", times=None)])
        unscoped = await ask(http, "unscoped")
        scoped_answer = await ask(http, "scoped")
    # The unscoped condition matched the question itself: no agent spoke (what the warning is about).
    assert unscoped["choices"][0]["message"]["content"] == "The agents finished without producing an answer."
    assert scoped_answer["choices"][0]["message"]["content"] == "Send SIGTERM with kill."


# --- load errors and exports --------------------------------------------------------------------
def studio_round_robin_team() -> RoundRobinGroupChat:
    """What AutoGen Studio's default gallery exports as "RoundRobin Team": a calculator tool, an
    OpenAI client with no key or URL of its own, TERMINATE or 10 messages."""

    def calculator(a: float, b: float, operator: str) -> str:
        """Perform basic arithmetic operations."""
        return str(a + b if operator == "+" else a - b)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", "sk-only-for-building")
        agent = AssistantAgent(
            name="assistant_agent",
            system_message="You are a helpful assistant. Solve tasks carefully. When done, say TERMINATE.",
            model_client=OpenAIChatCompletionClient(model="gpt-4o-mini"),
            tools=[FunctionTool(calculator, description="A simple calculator")],
        )
    return RoundRobinGroupChat(
        [agent], termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(10)
    )


async def test_a_studio_export_loads_with_its_environment_and_says_why_not_without(
    tmp_path: Path, llm: ScriptedLLMThread, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "studio-team", studio_round_robin_team())
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    caplog.set_level(logging.ERROR)
    report = WorkflowRegistry(
        make_settings(workflows_dir=tmp_path, allow_function_tools=True)
    ).load_defaults()
    reason = next(iter(report.failed.values()))
    assert "OpenAIError" in reason and "OPENAI_API_KEY" in reason  # the whole reason, not the class alone
    logged = next(r for r in caplog.records if r.getMessage() == "workflow not loaded")
    assert logged.reason == reason and len(reason) > 200  # type: ignore[attr-defined]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
    llm.load_script([rule("4. TERMINATE", system="Solve tasks carefully.")])
    settings = make_settings(workflows_dir=tmp_path, allow_function_tools=True)
    async with running_app(create_app(settings)) as http:
        body = await ask(http, "studio-team", [{"role": "user", "content": "2 + 2?"}])
    assert body["choices"][0]["message"]["content"] == "4."
    assert llm.requests()[0]["model"] == "gpt-4o-mini"


# --- human input over chat completions -----------------------------------------------------------
async def test_a_user_proxy_team_asks_and_the_next_message_answers(
    tmp_path: Path, llm: ScriptedLLMThread
) -> None:
    assistant = AssistantAgent(
        "assistant", model_client=client_for(llm.base_url), system_message="You are the greeter."
    )
    write(tmp_path, "greeter", RoundRobinGroupChat([assistant, UserProxyAgent("user_proxy")], max_turns=4))
    llm.load_script(
        [
            rule("What is your name?", system="You are the greeter.", last_re="^Hello$"),
            rule("Nice to meet you, Bob.", system="You are the greeter.", last_re="I am Bob"),
        ]
    )
    history = [{"role": "user", "content": "Hello"}]
    async with running_app(create_app(make_settings(workflows_dir=tmp_path))) as http:
        first = await ask(http, "greeter", history)
        assert first["input_required"] == {"agent": "user_proxy", "prompt": "What is your name?"}
        history += [
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "I am Bob"},
        ]
        second = await ask(http, "greeter", history)
    assert second["choices"][0]["message"]["content"] == "Nice to meet you, Bob."
    assert second["input_required"]["agent"] == "user_proxy"  # and it waits for the next message
    assert llm.unused_rules() == []


# --- what max_tokens means -----------------------------------------------------------------------
async def test_max_tokens_caps_every_model_call_the_same_way_streamed_or_not() -> None:
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "one two three four five"}],
        "max_tokens": 3,
    }
    async with running_app(create_app(make_settings())) as http:
        whole = (await http.post("/v1/chat/completions", json=body)).json()
        streamed = await http.post(
            "/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
        )
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert whole["choices"][0]["message"]["content"] == text == "one two three"
    assert whole["choices"][0]["finish_reason"] == "length"
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "length"
    assert whole["usage"] == events[-1]["usage"] and whole["usage"]["completion_tokens"] == 3


# --- the direct model ----------------------------------------------------------------------------
async def test_the_direct_model_makes_one_model_call_with_the_conversations_roles(
    llm: ScriptedLLMThread,
) -> None:
    settings = make_settings(llm_base_url=llm.base_url, llm_model="scripted", llm_api_key="sk-test")
    assert settings.direct_model_enabled  # on by default once an upstream LLM is configured
    llm.load_script([rule("A short title", times=None)])
    history = [
        {"role": "system", "content": "Write a title."},
        {"role": "user", "content": "What is AutoGen?"},
        {"role": "assistant", "content": "A framework for agents."},
        {"role": "user", "content": "Give this chat a title."},
    ]
    async with running_app(create_app(settings)) as http:
        models = (await http.get("/v1/models")).json()["data"]
        assert "direct" in {model["id"] for model in models}
        whole = await ask(http, "direct", history)
        streamed = await http.post(
            "/v1/chat/completions", json={"model": "direct", "messages": history, "stream": True}
        )
    assert whole["choices"][0]["message"]["content"] == "A short title"
    assert '"content":"A"' in streamed.text and '"reasoning_content"' not in streamed.text
    records = llm.requests()
    assert len(records) == 2  # one model call per request, no team
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant", "user"]
    assert whole["usage"]["completion_tokens"] == records[0]["reply"]["usage"]["completion_tokens"]


async def test_the_direct_model_is_off_without_an_upstream_unless_asked_for() -> None:
    async with running_app(create_app(make_settings())) as http:
        assert "direct" not in {model["id"] for model in (await http.get("/v1/models")).json()["data"]}
    async with running_app(create_app(make_settings(direct_model="on"))) as http:
        body = await ask(http, "direct", [{"role": "user", "content": "Title?"}])
    assert body["choices"][0]["message"]["content"].startswith("Answer (turn 1)")  # the embedded model
