"""The team shapes of the conformance corpus, built with AgentChat as a user would, and their scripts.

Each `Shape` builds a team (or agent) whose model clients point at the scripted fake LLM, dumps it
to component JSON (what a user drops into `WORKFLOWS_DIR`), and says what the fake answers to each
model call and what a client must see: the answer, the agent that gives it, the activity (in order),
the finish reason, whether the team waits for a person.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autogen_agentchat.agents import AssistantAgent, CodeExecutorAgent, SocietyOfMindAgent, UserProxyAgent
from autogen_agentchat.base import ChatAgent, Team
from autogen_agentchat.conditions import (
    HandoffTermination,
    MaxMessageTermination,
    TextMentionTermination,
    TimeoutTermination,
)
from autogen_agentchat.teams import (
    DiGraphBuilder,
    GraphFlow,
    MagenticOneGroupChat,
    RoundRobinGroupChat,
    SelectorGroupChat,
    Swarm,
)
from autogen_core.memory import ListMemory, MemoryContent
from autogen_core.tools import FunctionTool
from autogen_ext.code_executors.local import LocalCommandLineCodeExecutor
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.tools.mcp import McpWorkbench, StdioServerParams
from pydantic import BaseModel

from loadtests.scripted_llm import (
    MAGENTIC_FACTS_RE,
    MAGENTIC_FINAL_RE,
    MAGENTIC_LEDGER_RE,
    MAGENTIC_PLAN_RE,
    Reply,
    Rule,
    ToolCall,
    handoff,
    progress_ledger,
    rule,
    selector_rule,
)
from service.workflows.preparation import LLM_MODEL_INFO

MCP_SERVER = Path(__file__).with_name("mcp_server.py")

Step = tuple[str, ...]  # an expected activity: (type, agent, *details)


@dataclass(frozen=True)
class Shape:
    name: str
    build: Callable[[OpenAIChatCompletionClient, Path], Team | ChatAgent]
    script: Callable[[], list[Rule]]
    answer: str
    answer_agent: str | None
    activity: tuple[Step, ...] = ()
    finish_reason: str = "stop"
    input_required: str | None = None
    # Text the activity transcript shows, in this order.
    transcript: tuple[str, ...] = ()
    # Starts code execution: refused unless ALLOW_CODE_EXECUTION=true.
    runs_code: bool = False
    # The question, when it is not the first user message.
    messages: tuple[dict[str, Any], ...] = ({"role": "user", "content": "Please help."},)
    extra: dict[str, Any] = field(default_factory=dict)
    # The workflow file's top-level `answer_agent` (the agent whose text streams as the answer).
    live_answer_agent: str | None = None
    # Text that must never be in the answer (a reasoning model's thinking).
    never_in_answer: str | None = None


def get_weather(city: str) -> str:
    """The weather of a city."""
    return f"Sunny, 21 C in {city}"


def weather_tool() -> FunctionTool:
    return FunctionTool(get_weather, description="The weather of a city.")


def client_for(base_url: str, **model_info: Any) -> OpenAIChatCompletionClient:
    """A model client for the fake, as a user configures one (the key comes from OPENAI_API_KEY)."""
    info: Any = {**LLM_MODEL_INFO, **model_info}
    return OpenAIChatCompletionClient(
        model="scripted", base_url=base_url, api_key="sk-corpus", max_retries=0, model_info=info
    )


def weather_agent(client: OpenAIChatCompletionClient, *, reflect: bool, stream: bool) -> AssistantAgent:
    return AssistantAgent(
        "weather",
        model_client=client,
        tools=[weather_tool()],
        reflect_on_tool_use=reflect,
        model_client_stream=stream,
        system_message="You are the weather agent.",
    )


def text_then_tool() -> Reply:
    return Reply(
        text="Let me look that up.", tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris"})]
    )


WEATHER_ACTIVITY: tuple[Step, ...] = (
    ("tool_call", "weather", "get_weather"),
    ("tool_result", "weather", "get_weather"),
)


def _tool_agent_script() -> list[Rule]:
    return [
        rule(text_then_tool(), system="You are the weather agent.", tools=True),
        rule("It is sunny in Paris, 21 C.", system="You are the weather agent.", last_role="tool"),
    ]


def _tool_summary_script() -> list[Rule]:
    return [rule(text_then_tool(), system="You are the weather agent.", tools=True)]


def _round_robin(client: OpenAIChatCompletionClient, _: Path) -> Team:
    researcher = AssistantAgent(
        "researcher",
        model_client=client,
        tools=[weather_tool()],
        reflect_on_tool_use=True,
        model_client_stream=True,
        system_message="You are the researcher.",
    )
    writer = AssistantAgent(
        "writer", model_client=client, model_client_stream=True, system_message="You are the writer."
    )
    return RoundRobinGroupChat(
        [researcher, writer],
        termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(6),
    )


def _round_robin_script() -> list[Rule]:
    return [
        rule(
            Reply(tool_calls=[ToolCall(name="get_weather", arguments={"city": "Oslo"})]),
            system="You are the researcher.",
        ),
        rule("Oslo: sunny, 21 C.", system="You are the researcher.", last_role="tool"),
        rule("Pack sunglasses for Oslo. TERMINATE", system="You are the writer."),
    ]


def _selector(client: OpenAIChatCompletionClient, _: Path) -> Team:
    agents = [
        AssistantAgent(
            name, model_client=client, description=f"the {name}", system_message=f"You are the {name}."
        )
        for name in ("planner", "critic")
    ]
    return SelectorGroupChat(
        agents,
        model_client=client,
        termination_condition=TextMentionTermination("APPROVE") | MaxMessageTermination(6),
    )


def _selector_script() -> list[Rule]:
    return [
        selector_rule("planner"),
        rule("Plan: visit the museum, then the park.", system="You are the planner."),
        rule("Looks good. APPROVE", system="You are the critic."),
    ]


def _swarm(client: OpenAIChatCompletionClient, _: Path) -> Team:
    triage = AssistantAgent(
        "triage", model_client=client, handoffs=["billing"], system_message="You are triage."
    )
    billing = AssistantAgent(
        "billing", model_client=client, handoffs=["triage"], system_message="You are billing."
    )
    return Swarm(
        [triage, billing],
        termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(10),
    )


def _swarm_script() -> list[Rule]:
    return [
        rule(
            Reply(text="Billing handles refunds.", tool_calls=[handoff("billing")]), system="You are triage."
        ),
        rule(Reply(text="Refund issued.", tool_calls=[handoff("triage")]), system="You are billing."),
        rule("Your refund is on its way. TERMINATE", system="You are triage."),
    ]


def _swarm_to_user(client: OpenAIChatCompletionClient, _: Path) -> Team:
    agent = AssistantAgent(
        "support", model_client=client, handoffs=["user"], system_message="You are support."
    )
    return Swarm([agent], termination_condition=HandoffTermination("user") | MaxMessageTermination(5))


def _swarm_to_user_script() -> list[Rule]:
    return [rule(Reply(text="Which order number?", tool_calls=[handoff("user")]), system="You are support.")]


def _graph_agents(client: OpenAIChatCompletionClient, names: tuple[str, ...]) -> list[AssistantAgent]:
    return [
        AssistantAgent(name, model_client=client, model_client_stream=True, system_message=f"You are {name}.")
        for name in names
    ]


def _graph_sequential(client: OpenAIChatCompletionClient, _: Path) -> Team:
    a, b, c = _graph_agents(client, ("drafter", "editor", "publisher"))
    builder = DiGraphBuilder()
    builder.add_node(a).add_node(b).add_node(c)
    builder.add_edge(a, b).add_edge(b, c)
    return GraphFlow([a, b, c], graph=builder.build())


def _graph_sequential_script() -> list[Rule]:
    return [
        rule("A draft.", system="You are drafter."),
        rule("An edited draft.", system="You are editor."),
        rule("Published: the edited draft.", system="You are publisher."),
    ]


def _graph_conditional(client: OpenAIChatCompletionClient, _: Path) -> Team:
    judge, approve, reject = _graph_agents(client, ("judge", "approver", "rejecter"))
    builder = DiGraphBuilder()
    builder.add_node(judge).add_node(approve).add_node(reject)
    builder.add_edge(judge, approve, condition="yes")
    builder.add_edge(judge, reject, condition="no")
    return GraphFlow([judge, approve, reject], graph=builder.build())


def _graph_conditional_script() -> list[Rule]:
    return [
        rule("yes, this is fine", system="You are judge."),
        rule("Approved and filed.", system="You are approver."),
    ]


def _graph_fan_out(client: OpenAIChatCompletionClient, _: Path) -> Team:
    lead, left, right, joiner = _graph_agents(client, ("lead", "left", "right", "joiner"))
    builder = DiGraphBuilder()
    for agent in (lead, left, right, joiner):
        builder.add_node(agent)
    builder.add_edge(lead, left).add_edge(lead, right)
    builder.add_edge(left, joiner).add_edge(right, joiner)
    return GraphFlow([lead, left, right, joiner], graph=builder.build())


PARALLEL_WORDS = "one two three four five six seven eight nine ten"


def _graph_fan_out_script() -> list[Rule]:
    # Both branches stream at the same time (a token every 5 ms): their text must not interleave.
    return [
        rule("Split the work.", system="You are lead."),
        rule(Reply(text=f"left {PARALLEL_WORDS}", token_ms=5), system="You are left."),
        rule(Reply(text=f"right {PARALLEL_WORDS}", token_ms=5), system="You are right."),
        rule("Joined: left and right.", system="You are joiner."),
    ]


def _magentic(client: OpenAIChatCompletionClient, _: Path) -> Team:
    poet = AssistantAgent(
        "poet", model_client=client, system_message="You are the poet.", description="a poet"
    )
    return MagenticOneGroupChat([poet], model_client=client, max_turns=5)


def _magentic_script() -> list[Rule]:
    return [
        rule("1. GIVEN OR VERIFIED FACTS\n- none", last_re=MAGENTIC_FACTS_RE),
        rule("- ask the poet", last_re=MAGENTIC_PLAN_RE),
        rule(Reply(json=progress_ledger("poet", "Write one line.")), last_re=MAGENTIC_LEDGER_RE, json=True),
        rule("Roses are red.", system="You are the poet."),
        rule(Reply(json=progress_ledger("poet", "", satisfied=True)), last_re=MAGENTIC_LEDGER_RE),
        rule("The poem: Roses are red.", last_re=MAGENTIC_FINAL_RE),
    ]


def _memory(client: OpenAIChatCompletionClient, _: Path) -> ChatAgent:
    memory = ListMemory(
        memory_contents=[MemoryContent(content="The user likes teal.", mime_type="text/plain")]
    )
    return AssistantAgent(
        "stylist",
        model_client=client,
        memory=[memory],
        model_client_stream=True,
        system_message="You are the stylist.",
    )


def _memory_script() -> list[Rule]:
    return [rule("Teal suits you.", system="You are the stylist.", any_re="The user likes teal")]


def _mcp(client: OpenAIChatCompletionClient, _: Path) -> ChatAgent:
    workbench = McpWorkbench(
        StdioServerParams(command=sys.executable, args=[str(MCP_SERVER)], read_timeout_seconds=20)
    )
    return AssistantAgent(
        "calculator",
        model_client=client,
        workbench=workbench,
        reflect_on_tool_use=True,
        system_message="You are the calculator.",
    )


def _mcp_script() -> list[Rule]:
    return [
        rule(
            Reply(tool_calls=[ToolCall(name="add", arguments={"a": 2, "b": 40})]),
            system="You are the calculator.",
            tools=True,
        ),
        rule("2 + 40 = 42.", system="You are the calculator.", last_role="tool"),
    ]


def _society(client: OpenAIChatCompletionClient, _: Path) -> ChatAgent:
    inner = RoundRobinGroupChat(
        _graph_agents(client, ("thinker", "checker")),
        termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(3),
    )
    return SocietyOfMindAgent("society", team=inner, model_client=client)


def _society_script() -> list[Rule]:
    return [
        rule("Idea: a bridge.", system="You are thinker."),
        rule("Checked. TERMINATE", system="You are checker."),
        rule("We propose a bridge.", any_re="Idea: a bridge", tools=False),
    ]


def _user_proxy(client: OpenAIChatCompletionClient, _: Path) -> Team:
    assistant = AssistantAgent("assistant", model_client=client, system_message="You are the greeter.")
    return RoundRobinGroupChat([assistant, UserProxyAgent("user_proxy")], max_turns=4)


def _user_proxy_script() -> list[Rule]:
    return [rule("What is your name?", system="You are the greeter.")]


# --- reasoning models, structured output, time and handoff terminations, parallel tool calls ------
SECRET = "SECRET-CHAIN"
THINKING = f"{SECRET} the user wants 3+4."
R1_ANSWER = "The answer is 7."


def client_like(client: OpenAIChatCompletionClient, **model_info: Any) -> OpenAIChatCompletionClient:
    """The corpus's client to the fake, with other model_info (an R1 model, structured output)."""
    config = client.dump_component().config
    return client_for(str(config["base_url"]), **model_info)


def thinker(client: OpenAIChatCompletionClient, *, stream: bool) -> AssistantAgent:
    return AssistantAgent(
        "thinker",
        model_client=client_like(client, family="r1"),
        model_client_stream=stream,
        system_message="You are the thinker.",
    )


def _r1_script() -> list[Rule]:
    # An R1-style model writes its reasoning in the content, in a `<think>` block.
    return [rule(f"<think>{THINKING}</think>{R1_ANSWER}", system="You are the thinker.")]


def _reasoning_content_script() -> list[Rule]:
    # A DeepSeek-style upstream streams its reasoning apart, as `delta.reasoning_content`.
    return [rule(Reply(reasoning=THINKING, text=R1_ANSWER), system="You are the thinker.")]


def _r1_answer_agent(client: OpenAIChatCompletionClient, _: Path) -> Team:
    researcher = AssistantAgent(
        "researcher", model_client=client, model_client_stream=True, system_message="You are the researcher."
    )
    return RoundRobinGroupChat([researcher, thinker(client, stream=True)], max_turns=2)


def _r1_answer_agent_script() -> list[Rule]:
    return [rule("The numbers are 3 and 4.", system="You are the researcher."), *_r1_script()]


class CityFacts(BaseModel):
    city: str
    population: int


def _structured(client: OpenAIChatCompletionClient, _: Path) -> ChatAgent:
    return AssistantAgent(
        "geographer",
        model_client=client_like(client, structured_output=True),
        output_content_type=CityFacts,
        model_client_stream=True,
        system_message="You are the geographer.",
    )


def _structured_script() -> list[Rule]:
    # The model's tokens have spaces; the answer is the object's canonical JSON, streamed or not.
    return [rule('{"city": "Paris", "population": 2100000}', system="You are the geographer.", json=True)]


TIMEOUT_S = 1.0
SLOW_CALL_MS = 1_500


def _timeout(client: OpenAIChatCompletionClient, _: Path) -> Team:
    a, b = _graph_agents(client, ("first", "second"))
    return RoundRobinGroupChat(
        [a, b], termination_condition=TimeoutTermination(TIMEOUT_S) | MaxMessageTermination(10)
    )


def _timeout_script() -> list[Rule]:
    # The second call outlasts the timeout: the team stops after it, in both modes. A third call
    # would find no rule (the fake answers 400) and fail the run.
    return [
        rule("Step one.", system="You are first."),
        rule(Reply(text="Step two, done.", ttft_ms=SLOW_CALL_MS), system="You are second."),
    ]


def _handoff_out(client: OpenAIChatCompletionClient, _: Path) -> Team:
    clerk = AssistantAgent(
        "clerk",
        model_client=client,
        handoffs=["manager"],
        model_client_stream=True,
        system_message="You are the clerk.",
    )
    return Swarm([clerk], termination_condition=HandoffTermination("manager") | MaxMessageTermination(5))


def _handoff_out_script() -> list[Rule]:
    reply = Reply(text="This needs a manager.", tool_calls=[handoff("manager")])
    return [rule(reply, system="You are the clerk.")]


def _parallel_tools_script() -> list[Rule]:
    calls = [ToolCall(name="get_weather", arguments={"city": city}) for city in ("Paris", "Oslo")]
    return [
        rule(Reply(tool_calls=calls), system="You are the weather agent.", tools=True),
        rule("Sunny in both.", system="You are the weather agent.", last_role="tool"),
    ]


def _code_execution(client: OpenAIChatCompletionClient, work_dir: Path) -> Team:
    coder = AssistantAgent("coder", model_client=client, system_message="You are the coder.")
    with warnings.catch_warnings():  # AgentChat warns that a local executor runs code: that is the point
        warnings.simplefilter("ignore", UserWarning)
        executor = CodeExecutorAgent(
            "executor", code_executor=LocalCommandLineCodeExecutor(work_dir=work_dir)
        )
    return RoundRobinGroupChat([coder, executor], max_turns=2)


def _code_execution_script() -> list[Rule]:
    return [rule("Run this:\n```python\nprint(6 * 7)\n```", system="You are the coder.")]


# --- an image in (issue 21, item 5) ---------------------------------------------------------
# A 2x2 red PNG, as a data URL: what a chat client sends for an attached picture.
RED_SQUARE_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDA"
    "AAANHQEDasKb6QAAAABJRU5ErkJggg=="
)
IMAGE_QUESTION: dict[str, Any] = {
    "role": "user",
    "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": RED_SQUARE_PNG, "detail": "low"}},
    ],
}


def seeing_client(client: OpenAIChatCompletionClient) -> OpenAIChatCompletionClient:
    """The corpus's client, with a model that can see (model_info vision)."""
    config = client.dump_component().config
    return OpenAIChatCompletionClient(
        model="scripted",
        base_url=config["base_url"],
        api_key="sk-corpus",
        max_retries=0,
        model_info={**LLM_MODEL_INFO, "vision": True},
    )


def _vision_team(client: OpenAIChatCompletionClient, _: Path) -> Team:
    """A seeing describer and a blind editor: AgentChat gives the editor the text alone."""
    describer = AssistantAgent(
        "describer",
        model_client=seeing_client(client),
        model_client_stream=True,
        system_message="You are the describer.",
    )
    editor = AssistantAgent("editor", model_client=client, system_message="You are the editor.")
    return RoundRobinGroupChat([describer, editor], termination_condition=MaxMessageTermination(3))


def _vision_script() -> list[Rule]:
    return [
        rule("A small red square.", system="You are the describer."),
        rule("It is a red square.", system="You are the editor."),
    ]


SHAPES: tuple[Shape, ...] = (
    Shape(
        "tool-agent",
        lambda client, _: weather_agent(client, reflect=True, stream=True),
        _tool_agent_script,
        answer="It is sunny in Paris, 21 C.",
        answer_agent="weather",
        activity=WEATHER_ACTIVITY,
        transcript=("Let me look that up.", "get_weather", "Sunny, 21 C in Paris"),
    ),
    Shape(
        "tool-agent-no-stream",
        lambda client, _: weather_agent(client, reflect=True, stream=False),
        _tool_agent_script,
        answer="It is sunny in Paris, 21 C.",
        answer_agent="weather",
        activity=(("thought", "weather"), *WEATHER_ACTIVITY),
        transcript=("Let me look that up.", "get_weather"),
    ),
    Shape(
        "tool-agent-summary",
        lambda client, _: weather_agent(client, reflect=False, stream=True),
        _tool_summary_script,
        answer="Sunny, 21 C in Paris",
        answer_agent="weather",
        activity=WEATHER_ACTIVITY,
        transcript=("Let me look that up.", "get_weather"),
    ),
    Shape(
        "round-robin-tools",
        _round_robin,
        _round_robin_script,
        answer="Pack sunglasses for Oslo.",
        answer_agent="writer",
        activity=(
            ("agent_turn", "researcher"),
            ("tool_call", "researcher", "get_weather"),
            ("tool_result", "researcher", "get_weather"),
            ("agent_turn", "writer"),
        ),
        transcript=("**researcher:**", "Oslo: sunny, 21 C.", "**writer:**"),
    ),
    Shape(
        "selector",
        _selector,
        _selector_script,
        answer="Looks good.",
        answer_agent="critic",
        activity=(("agent_turn", "planner"), ("agent_turn", "critic")),
        transcript=("**planner:**", "Plan: visit the museum", "**critic:**"),
    ),
    Shape(
        "swarm",
        _swarm,
        _swarm_script,
        answer="Your refund is on its way.",
        answer_agent="triage",
        activity=(
            ("agent_turn", "triage"),
            ("thought", "triage"),
            ("handoff", "triage", "billing"),
            ("agent_turn", "billing"),
            ("handoff", "billing", "triage"),
            ("agent_turn", "triage"),
        ),
        transcript=("Billing handles refunds.", "billing", "Refund issued.", "triage"),
    ),
    Shape(
        "swarm-to-user",
        _swarm_to_user,
        _swarm_to_user_script,
        answer="Which order number?",
        answer_agent="support",
        activity=(("handoff", "support", "user"), ("input_requested", "support")),
        input_required="support",
    ),
    Shape(
        "graph-sequential",
        _graph_sequential,
        _graph_sequential_script,
        answer="Published: the edited draft.",
        answer_agent="publisher",
        activity=(("agent_turn", "drafter"), ("agent_turn", "editor"), ("agent_turn", "publisher")),
        transcript=("A draft.", "An edited draft."),
    ),
    Shape(
        "graph-conditional",
        _graph_conditional,
        _graph_conditional_script,
        answer="Approved and filed.",
        answer_agent="approver",
        activity=(("agent_turn", "judge"), ("agent_turn", "approver")),
        transcript=("yes, this is fine",),
    ),
    Shape(
        "graph-fan-out",
        _graph_fan_out,
        _graph_fan_out_script,
        answer="Joined: left and right.",
        answer_agent="joiner",
        activity=(("agent_turn", "lead"), ("agent_turn", "joiner")),
        transcript=("Split the work.",),
        extra={"whole_turns": (f"left {PARALLEL_WORDS}", f"right {PARALLEL_WORDS}")},
    ),
    Shape(
        "magentic-one",
        _magentic,
        _magentic_script,
        answer="The poem: Roses are red.",
        answer_agent="MagenticOneOrchestrator",
        activity=(("agent_turn", "poet"),),
        transcript=("Roses are red.",),
    ),
    Shape(
        "memory",
        _memory,
        _memory_script,
        answer="Teal suits you.",
        answer_agent="stylist",
        activity=(("memory_query", "stylist"),),
        transcript=("The user likes teal.",),
    ),
    Shape(
        "mcp",
        _mcp,
        _mcp_script,
        answer="2 + 40 = 42.",
        answer_agent="calculator",
        activity=(("tool_call", "calculator", "add"), ("tool_result", "calculator", "add")),
        transcript=("`add`", "42"),
    ),
    Shape(
        "society-of-mind",
        _society,
        _society_script,
        answer="We propose a bridge.",
        answer_agent="society",
        activity=(("agent_turn", "thinker"), ("agent_turn", "checker")),
        transcript=("Idea: a bridge.",),
    ),
    Shape(
        "user-proxy",
        _user_proxy,
        _user_proxy_script,
        answer="What is your name?",
        answer_agent="user_proxy",
        activity=(("agent_turn", "assistant"), ("input_requested", "user_proxy")),
        input_required="user_proxy",
    ),
    Shape(
        "r1-thinking",
        lambda client, _: thinker(client, stream=True),
        _r1_script,
        answer=R1_ANSWER,
        answer_agent="thinker",
        activity=(("thought", "thinker"),),
        transcript=(THINKING,),
        never_in_answer=SECRET,
    ),
    Shape(
        "r1-thinking-no-stream",
        lambda client, _: thinker(client, stream=False),
        _r1_script,
        answer=R1_ANSWER,
        answer_agent="thinker",
        activity=(("thought", "thinker"),),
        transcript=(THINKING,),
        never_in_answer=SECRET,
    ),
    Shape(
        "r1-reasoning-content",
        lambda client, _: thinker(client, stream=True),
        _reasoning_content_script,
        answer=R1_ANSWER,
        answer_agent="thinker",
        activity=(("thought", "thinker"),),
        transcript=(THINKING,),
        never_in_answer=SECRET,
    ),
    Shape(
        "r1-answer-agent",
        _r1_answer_agent,
        _r1_answer_agent_script,
        answer=R1_ANSWER,
        answer_agent="thinker",
        activity=(("agent_turn", "researcher"), ("thought", "thinker")),
        transcript=("The numbers are 3 and 4.", THINKING),
        live_answer_agent="thinker",
        never_in_answer=SECRET,
    ),
    Shape(
        "structured-output",
        _structured,
        _structured_script,
        answer='{"city":"Paris","population":2100000}',
        answer_agent="geographer",
    ),
    Shape(
        "timeout-termination",
        _timeout,
        _timeout_script,
        answer="Step two, done.",
        answer_agent="second",
        activity=(("agent_turn", "first"),),
        transcript=("Step one.",),
    ),
    Shape(
        "handoff-termination",
        _handoff_out,
        _handoff_out_script,
        answer="This needs a manager.",
        answer_agent="clerk",
        activity=(("handoff", "clerk", "manager"),),
    ),
    Shape(
        "parallel-tool-calls",
        lambda client, _: weather_agent(client, reflect=True, stream=True),
        _parallel_tools_script,
        answer="Sunny in both.",
        answer_agent="weather",
        activity=(*WEATHER_ACTIVITY, ("tool_result", "weather", "get_weather")),
        transcript=("Sunny, 21 C in Paris", "Sunny, 21 C in Oslo"),
    ),
    Shape(
        "code-execution",
        _code_execution,
        _code_execution_script,
        answer="42",
        answer_agent="executor",
        activity=(("agent_turn", "coder"), ("agent_turn", "executor")),
        runs_code=True,
    ),
    Shape(
        "image-in",
        _vision_team,
        _vision_script,
        answer="It is a red square.",
        answer_agent="editor",
        activity=(("agent_turn", "describer"),),
        transcript=("A small red square.",),
        messages=(IMAGE_QUESTION,),
        extra={"image_to": "You are the describer.", "no_image_to": "You are the editor."},
    ),
)


def workflow_files(directory: Path, llm_base_url: str, work_dir: Path) -> dict[str, Path]:
    """Every shape dumped to `<name>.json` in `directory`, as a user would save it."""
    client = client_for(llm_base_url)
    paths: dict[str, Path] = {}
    for shape in SHAPES:
        document = shape.build(client, work_dir).dump_component().model_dump(mode="json")
        if shape.live_answer_agent is not None:
            document["answer_agent"] = shape.live_answer_agent
        path = directory / f"{shape.name}.json"
        path.write_text(json.dumps(document, indent=2))
        paths[shape.name] = path
    return paths
