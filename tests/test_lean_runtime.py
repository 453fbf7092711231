"""The lean agent runtime (`AGENT_RUNTIME=lean`) and the lean parsing of upstream chunks
(`UPSTREAM_PARSING=lean`) against AgentChat's default runtime and the `openai` SDK's parsing, over
the whole conformance corpus: the same answers and activity, event for event.

In process: the real app over httpx's ASGI transport (both APIs, both modes, stored state carried
to a second turn, human input answered), and the run itself (`execute_run`) for cancellation,
deadlines and an upstream failure, every team on both runtimes, against the scripted fake LLM (a
thread). Then the runtime's own contract: a handler's failure reaches the run as the default
runtime's does, the run's token stops its tasks, and no task is left when a run ends.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TerminationCondition
from autogen_agentchat.messages import StopMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import (
    AgentId,
    CancellationToken,
    DefaultTopicId,
    MessageContext,
    RoutedAgent,
    TypeSubscription,
    event,
    rpc,
)
from autogen_core.models import ChatCompletionClient, ModelInfo, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient

from loadtests.scripted_llm import (
    Fault,
    Reply,
    Rule,
    Script,
    ScriptedLLMThread,
    ToolCall,
    start_scripted_llm_thread,
)
from service.app import create_app
from service.contract.chat import ChatMessage
from service.runs.context import ListSink
from service.runs.events import RunEndReason, RunEvent
from service.runs.execute import execute_run
from service.serving.images import chat_images, load_images
from service.serving.task import to_task
from service.workflows.lean_teams import LeanRoundRobinGroupChat, LeanRuntimeTeam
from service.workflows.preparation import LLM_MODEL_INFO
from service.workflows.registry import WorkflowRegistry
from service.workflows.runtime import LeanAgentRuntime
from service.workflows.upstream_parsing import lean_parsing
from tests.conformance.shapes import SHAPES, Shape, workflow_files
from tests.helpers.app import make_settings, running_app

RUNTIMES = ("lean", "default")
# The lean side parses the upstream's chunks with pydantic's validator, the default side with the SDK.
PARSING = {"lean": "lean", "default": "sdk"}
NAMES = [shape.name for shape in SHAPES]
BY_NAME = {shape.name: shape for shape in SHAPES}
# Parallel branches (graph fan-out) stream at the same time: their deltas interleave by timing.
PARALLEL = {shape.name for shape in SHAPES if shape.extra.get("whole_turns")}
FOLLOW_UP = "Thank you. And next?"
SLOW_MS = 300
ENDS_WITHIN_S = 5.0
_VOLATILE_KEYS = frozenset({"created", "created_at", "completed_at"})
_ORDER_KEYS = frozenset({"sequence_number", "output_index", "index"})
_ID = re.compile(r"^(chatcmpl-|resp_|msg_|rs_|conv_|fc_)[0-9A-Za-z]+$")


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLMThread]:
    with start_scripted_llm_thread() as server:
        yield server


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLMThread) -> Path:
    directory = tmp_path_factory.mktemp("workflows")
    workflow_files(directory, llm.base_url, tmp_path_factory.mktemp("code"))
    return directory


@pytest.fixture(autouse=True)
def openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files carry a masked key: their clients read OPENAI_API_KEY, as AutoGen's do."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-corpus")


def script(shape: Shape, *, slow: bool = False, fail_call: int | None = None) -> Script:
    """The shape's script, reloaded before every request (its rules are used up), "OK." beyond it."""
    rules: list[Rule] = shape.script()
    if slow:
        rules = [
            rule.model_copy(update={"reply": rule.reply.model_copy(update={"ttft_ms": SLOW_MS})})
            for rule in rules
        ]
    if fail_call is not None:
        fault = Reply(text="never", fault=Fault(kind="http", status=500))
        rules = [Rule(match={"call": fail_call}, reply=fault), *rules]
    return Script(rules=rules, default=Reply(text="OK.", ttft_ms=SLOW_MS if slow else 0))


# ------------------------------------------------------------------------------ through the APIs
class Normalizer:
    """Ids and clocks are the only things two runs may differ in: ids become their order of appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: 0 if key in _VOLATILE_KEYS else self(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self(item) for item in value]
        if isinstance(value, str) and _ID.match(value):
            return self.ids.setdefault(value, f"<id {len(self.ids)}>")
        return value


def sse_events(text: str) -> list[Any]:
    return [
        json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def unordered(value: Any) -> Any:
    """Concurrent agents' deltas interleave by timing, on either runtime: then the events are compared
    as a set, without what depends on their order (positions, sequence numbers, ids)."""
    if isinstance(value, dict):
        return {key: unordered(item) for key, item in value.items() if key not in _ORDER_KEYS}
    if isinstance(value, list):
        return sorted((unordered(item) for item in value), key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(value, str) and value.startswith("<id "):
        return "<id>"
    if isinstance(value, str) and "\n" in value:  # a transcript: the parallel turns in either order
        return sorted(value.splitlines())
    return value


def comparable(events: list[Any], parallel: bool) -> list[Any]:
    return list(unordered(events)) if parallel else events


def responses_input(content: Any) -> Any:
    """A chat message's content as Responses `input` (content parts become input parts)."""
    if isinstance(content, str):
        return content
    parts = [
        {"type": "input_text", "text": part["text"]}
        if part["type"] == "text"
        else {"type": "input_image", "image_url": part["image_url"]["url"]}
        for part in content
    ]
    return [{"type": "message", "role": "user", "content": parts}]


async def conversation(http: httpx.AsyncClient, llm: ScriptedLLMThread, shape: Shape) -> dict[str, Any]:
    """Everything a client sees of one shape: Chat Completions and Responses, whole and streamed, and
    a second Responses turn on the stored state (for a team waiting for a person: the answer)."""
    normalize = Normalizer()
    messages = list(shape.messages)
    seen: dict[str, Any] = {}

    async def post(path: str, body: dict[str, Any]) -> Any:
        llm.load_script(script(shape))
        response = await http.post(path, json=body)
        assert response.status_code == 200, response.text
        calls = [(record["label"], record["rule"], record["outcome"]) for record in llm.requests()]
        llm.reset()
        streamed = body.get("stream", False)
        return {"body": sse_events(response.text) if streamed else response.json(), "calls": calls}

    seen["chat"] = await post("/v1/chat/completions", {"model": shape.name, "messages": messages})
    seen["chat-stream"] = await post(
        "/v1/chat/completions",
        {
            "model": shape.name,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    question = responses_input(messages[-1]["content"])
    first = await post("/v1/responses", {"model": shape.name, "input": question})
    seen["responses"] = first
    seen["responses-stream"] = await post(
        "/v1/responses", {"model": shape.name, "input": question, "stream": True}
    )
    seen["responses-next"] = await post(
        "/v1/responses",
        {
            "model": shape.name,
            "input": FOLLOW_UP,
            "previous_response_id": first["body"]["id"],
            "stream": True,
        },
    )
    seen = {key: normalize(value) for key, value in seen.items()}
    for key in seen:
        seen[key]["calls"] = comparable(seen[key]["calls"], shape.name in PARALLEL)
    for key in seen:
        body = seen[key]["body"]
        seen[key]["body"] = comparable(body if isinstance(body, list) else [body], shape.name in PARALLEL)
    return seen


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def apps(
    corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", "sk-corpus")
        async with AsyncExitStack() as stack:
            clients = {}
            for runtime in RUNTIMES:
                settings = make_settings(
                    workflows_dir=corpus,
                    allow_code_execution=True,
                    allow_function_tools=True,
                    allow_stdio_mcp=True,
                    agent_runtime=runtime,
                    upstream_parsing=PARSING[runtime],
                    stream_flush_interval_ms=0,
                    data_dir=tmp_path_factory.mktemp(f"data-{runtime}"),
                )
                clients[runtime] = await stack.enter_async_context(running_app(create_app(settings)))
            yield clients


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", NAMES)
async def test_both_apis_both_modes_and_stored_state_are_the_same_on_both_runtimes(
    name: str, apps: dict[str, httpx.AsyncClient], llm: ScriptedLLMThread
) -> None:
    shape = BY_NAME[name]
    lean = await conversation(apps["lean"], llm, shape)
    default = await conversation(apps["default"], llm, shape)
    for key in lean:
        assert lean[key] == default[key], key
    assert lean["chat"]["body"][0]["choices"][0]["message"]["content"] == shape.answer


# ------------------------------------------------------------------------------------- runs
@dataclass
class Registries:
    by_runtime: dict[str, WorkflowRegistry]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def registries(corpus: Path) -> AsyncIterator[Registries]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", "sk-corpus")
        found = {}
        for runtime in RUNTIMES:
            registry = WorkflowRegistry(
                make_settings(
                    workflows_dir=corpus,
                    allow_code_execution=True,
                    allow_function_tools=True,
                    allow_stdio_mcp=True,
                    agent_runtime=runtime,
                    upstream_parsing=PARSING[runtime],
                )
            )
            report = registry.load_defaults()
            assert not report.failed, report.failed
            await registry.start_shared()
            found[runtime] = registry
        try:
            yield Registries(found)
        finally:
            for registry in found.values():
                await registry.aclose()


class LeavingSink(ListSink):
    """A client that leaves at the first thing the team shows: as the service does, the run's token
    is cancelled, then its task. What it saw is what the client saw; the run's last event (added
    if the run ends) is kept apart."""

    def __init__(self, leave: bool) -> None:
        super().__init__()
        self.leave = leave
        self.left = False
        self.after: list[RunEvent] = []
        self.run: asyncio.Future[Any] | None = None
        self.token = CancellationToken()

    async def send(self, event: RunEvent) -> None:
        self.offer(event)

    def offer(self, event: RunEvent) -> bool:
        if self.left:
            self.after.append(event)
            return True
        self.events.append(event)
        if self.leave and self.run is not None and len(self.events) > 1:
            self.left = True
            self.token.cancel()
            self.run.cancel()
        return True


async def run_once(
    registry: WorkflowRegistry,
    shape: Shape,
    *,
    deadline_s: float = 30.0,
    leave: bool = False,
) -> dict[str, Any]:
    """The run events of one run, as dicts (when the client leaves: those it saw, and whether the
    run ended); on the lean runtime, no task of the run is left after it."""
    workflow = registry.get(shape.name)
    assert workflow is not None
    sink = LeavingSink(leave)
    before = asyncio.all_tasks()
    chat = [ChatMessage.model_validate(message) for message in shape.messages]
    task_messages = to_task(chat, await load_images(chat_images(chat), make_settings()))
    request = workflow.run_request("run", deadline_s=deadline_s, max_tokens=None)
    sink.run = run = asyncio.ensure_future(
        execute_run(workflow.build(), task_messages, request, sink, sink.token)
    )
    # AgentChat's default runtime may never end a cancelled run (docs/runtime.md): it is not waited for.
    await asyncio.wait([run], timeout=ENDS_WITHIN_S)
    ended = run.done()
    if ended and not run.cancelled():
        run.result()
    if workflow.agent_runtime == "lean":
        assert ended
        left = [task for task in asyncio.all_tasks() - before if not task.done() and not _shared(task)]
        assert not [task for task in left if "_deliver" in repr(task.get_coro())], left
        # AgentChat's AssistantAgent runs its tool calls in a task it does not cancel with itself: a
        # cancelled agent leaves it to notice the run's token.
        if left:
            await asyncio.wait(left, timeout=1)
        assert all(task.done() for task in left), left
    events = [{"type": type(item).__name__, **asdict(item)} for item in sink.events]
    last = [type(item).__name__ for item in sink.after]
    return {"events": events, "ended": ended, "last": last, "lean": workflow.agent_runtime == "lean"}


def _shared(task: asyncio.Task[Any]) -> bool:
    """A task of a shared MCP session (it outlives runs by design)."""
    return "mcp" in repr(task.get_coro()) or "mcp" in task.get_name()


def model_calls(llm: ScriptedLLMThread) -> list[tuple[Any, ...]]:
    return [(record["label"], record["rule"], record["outcome"]) for record in llm.requests()]


async def both(
    registries: Registries,
    llm: ScriptedLLMThread,
    shape: Shape,
    make_script: Callable[[], Script],
    **options: Any,
) -> dict[str, Any]:
    seen = {}
    for runtime, registry in registries.by_runtime.items():
        llm.reset()
        llm.load_script(make_script())
        run = await run_once(registry, shape, **options)
        await llm.wait_stats_async(lambda stats: stats["in_flight"] == 0 and stats["open_streams"] == 0)
        parallel = shape.name in PARALLEL
        seen[runtime] = {**run, "events": comparable(run["events"], parallel)}
        seen[runtime]["calls"] = comparable(model_calls(llm), parallel)
    return seen


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", NAMES)
async def test_cancellation_deadline_and_failure_end_the_run_the_same_on_both_runtimes(
    name: str, registries: Registries, llm: ScriptedLLMThread
) -> None:
    shape = BY_NAME[name]
    cancelled = await both(registries, llm, shape, lambda: script(shape, slow=True), leave=True)
    lean, default = cancelled["lean"], cancelled["default"]
    assert lean["events"] == default["events"]  # what the client saw before it left
    assert lean["calls"] == default["calls"]  # no model call after it left
    assert all(outcome == "cancelled" for *_, outcome in lean["calls"][1:])
    # The run ends at once, cancelled (on the default runtime, AgentChat's team may hang instead).
    assert lean["ended"] and lean["last"][-1:] == ["RunEnded"]
    assert default["last"] == lean["last"] or not default["ended"]

    # The deadline falls in the middle of the first model call: a later one would depend on how
    # fast the machine runs the turns before it (the same on both runtimes only on an idle machine).
    late = await both(
        registries, llm, shape, lambda: script(shape, slow=True), deadline_s=SLOW_MS * 0.5 / 1000
    )
    assert late["lean"] == {**late["default"], "lean": late["lean"]["lean"]}
    assert late["lean"]["events"][-1]["reason"] == RunEndReason.DEADLINE

    failed = await both(registries, llm, shape, lambda: script(shape, fail_call=0))
    assert failed["lean"] == {**failed["default"], "lean": failed["lean"]["lean"]}
    assert failed["lean"]["events"][-1]["reason"] == RunEndReason.FAILED


# ------------------------------------------------------------------------- the runtime itself
def test_every_team_of_the_corpus_runs_on_the_lean_runtime(registries: Registries) -> None:
    for shape in SHAPES:
        lean = registries.by_runtime["lean"].get(shape.name)
        default = registries.by_runtime["default"].get(shape.name)
        assert lean is not None and default is not None
        if lean.kind == "team":
            assert lean.agent_runtime == "lean" and isinstance(lean.build(), LeanRuntimeTeam)
            assert default.agent_runtime == "default" and not isinstance(default.build(), LeanRuntimeTeam)


def test_runtime_tracing_keeps_the_default_runtime_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    registry = WorkflowRegistry(make_settings(autogen_runtime_tracing=True))
    with caplog.at_level("INFO", logger="service.workflows.registry"):
        registry.load_defaults()
    workflow = registry.get("demo-team")
    assert workflow is not None and workflow.agent_runtime == "default"
    assert not isinstance(workflow.build(), LeanRuntimeTeam)
    noted = [
        record for record in caplog.records if record.getMessage() == "teams on AgentChat's default runtime"
    ]
    assert any(getattr(record, "model", None) == "demo-team" for record in noted)


def test_an_unknown_team_type_keeps_the_default_runtime_and_the_log_names_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = WorkflowRegistry(make_settings(workflow_allowed_providers=["tests.test_lean_runtime"]))
    document = json.loads(
        (Path(__file__).parents[1] / "service/workflows/builtin/demo-team.json").read_text()
    )
    document["provider"] = f"{__name__}.CustomTeam"
    with caplog.at_level("WARNING", logger="service.workflows.registry"):
        workflow = registry.register_component("custom-team", document)
    assert workflow.agent_runtime == "default"
    assert any(f"{__name__}.CustomTeam" in str(getattr(record, "reason", "")) for record in caplog.records)


class CustomTeam(RoundRobinGroupChat):
    """A team class of the user's own (the lean runtime does not know it)."""

    component_provider_override = f"{__name__}.CustomTeam"


@dataclass
class Ping:
    text: str


@dataclass
class Shout:
    text: str


class Failing(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("fails on a published message, answers an RPC")
        self.started = asyncio.Event()

    @event
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        if message.text == "wait":
            self.started.set()
            await asyncio.sleep(3600)
        raise ValueError(f"cannot handle {message.text}")

    @rpc
    async def on_rpc(self, message: Shout, ctx: MessageContext) -> str:
        return message.text.upper()


async def registered() -> tuple[LeanAgentRuntime, Failing]:
    runtime = LeanAgentRuntime()
    made: list[Failing] = []

    def factory() -> Failing:
        made.append(Failing())
        return made[-1]

    await Failing.register(runtime, "failing", factory)
    await runtime.add_subscription(TypeSubscription(topic_type="pings", agent_type="failing"))
    assert await runtime.send_message(Shout("hi"), AgentId("failing", "default")) == "HI"
    return runtime, made[0]


async def test_a_handlers_failure_cancels_the_run_and_is_kept_for_it() -> None:
    runtime, _ = await registered()
    token = CancellationToken()
    with pytest.raises(asyncio.CancelledError):
        async with runtime.run_scope(token):
            await runtime.publish_message(Ping("this"), DefaultTopicId("pings", "default"))
            waiter = asyncio.ensure_future(asyncio.sleep(10))
            token.link_future(waiter)
            await waiter
    assert token.is_cancelled()
    assert isinstance(runtime.failure, ValueError) and str(runtime.failure) == "cannot handle this"


async def test_the_runs_token_stops_its_tasks_and_none_is_left() -> None:
    runtime, agent = await registered()
    token = CancellationToken()
    before = asyncio.all_tasks()
    with pytest.raises(asyncio.CancelledError):
        async with runtime.run_scope(token):
            await runtime.publish_message(Ping("wait"), DefaultTopicId("pings", "default"))
            await asyncio.wait_for(agent.started.wait(), 5)
            token.cancel()
            raise asyncio.CancelledError
    assert runtime.failure is None
    assert not [task for task in asyncio.all_tasks() - before if not task.done()]


async def test_a_run_that_ended_is_cancelled_while_its_last_handlers_finish_and_leaves_none() -> None:
    runtime, agent = await registered()
    before = asyncio.all_tasks()

    async def run() -> None:
        async with runtime.run_scope(CancellationToken()):
            await runtime.publish_message(Ping("wait"), DefaultTopicId("pings", "default"))
            await asyncio.wait_for(agent.started.wait(), 5)

    scope = asyncio.ensure_future(run())
    await asyncio.sleep(0.05)  # the run ended; its scope waits for the handler still running
    assert not scope.done()
    scope.cancel()  # e.g. the deadline
    with pytest.raises(asyncio.CancelledError):
        await scope
    assert not [task for task in asyncio.all_tasks() - before if not task.done()]


@pytest.mark.parametrize("failing_check", [1, 2])
async def test_a_failing_handler_fails_the_team_run_as_on_the_default_runtime(failing_check: int) -> None:
    """The team's termination condition fails: on the task (in the manager's RPC handler) or on the
    first agent's answer (in a handler of a published message, which AgentChat reports to the
    team and raises to the runtime): both runtimes end the run with the same error."""

    class Broken(TerminationCondition):
        checks = 0

        @property
        def terminated(self) -> bool:
            return False

        async def __call__(self, messages: Any) -> StopMessage | None:
            self.checks += 1
            if self.checks == failing_check:
                raise KeyError("broken condition")
            return None

        async def reset(self) -> None:
            pass

    client = ChatCompletionClient.load_component(
        {"provider": "service.workflows.demo_client.DemoChatCompletionClient", "config": {"role": "writer"}}
    )
    errors = []
    before = asyncio.all_tasks()
    for team_class in (RoundRobinGroupChat, LeanRoundRobinGroupChat):
        team = team_class([AssistantAgent("writer", model_client=client)], termination_condition=Broken())
        with pytest.raises(Exception) as raised:
            await team.run(task="Hello")
        errors.append((type(raised.value), str(raised.value).split("\n", 1)[0]))
    assert errors[0] == errors[1], errors
    assert not [task for task in asyncio.all_tasks() - before if not task.done()]


# ------------------------------------------------------------------------ the upstream's chunks
OFF_SCHEMA_CHUNK = (
    'data: {"id": "x", "object": "chat.completion", "created": "soon", "model": "scripted",'
    ' "choices": [{"index": 0, "delta": {"content": " odd"}, "finish_reason": null}]}'
)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(
            reasoning="Let me think.",
            text="Sunny.",
            tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris"})],
        ),
        Reply(
            text="Before and after.", fault=Fault(kind="garbage", after=1, lines=["", OFF_SCHEMA_CHUNK, ""])
        ),
        Reply(json={"answer": 42}),
    ],
    ids=["reasoning-and-tool-calls", "a-chunk-off-the-schema", "json"],
)
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_lean_parsing_gives_what_the_sdks_parsing_gives(
    reply: Reply, stream: bool, llm: ScriptedLLMThread
) -> None:
    seen: list[list[Any]] = []
    for lean in (True, False):
        llm.reset()
        llm.load_script(Script(rules=[Rule(reply=reply)]))
        client = OpenAIChatCompletionClient(
            model="scripted",
            base_url=llm.base_url,
            api_key="sk-corpus",
            max_retries=0,
            model_info=cast(ModelInfo, {**LLM_MODEL_INFO, "family": "r1"}),
        )
        if lean:
            lean_parsing(client)
            assert type(client._client).__name__ == "LeanAsyncOpenAI"
        messages = [UserMessage(content="Weather?", source="user")]
        try:
            if stream:
                items = [item async for item in client.create_stream(messages)]
            else:
                items = [await client.create(messages)]
        except Exception as exc:  # a body that is not JSON fails the same way
            seen.append([type(exc).__name__])
        else:
            seen.append([item if isinstance(item, str) else item.model_dump() for item in items])
        await client.close()
    assert seen[0] == seen[1]
