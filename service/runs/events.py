"""Run events: what one served run of a workflow produces, independent of any wire format.

Every served run yields `RunStarted`, then any number of the activity events below, then
`FinalAnswer` (unless it failed or was cancelled), then exactly one `RunEnded`. Encoders (chat
completions, Responses) read only these. Every AgentChat message and event type maps onto one of
them (`service.runs.agentchat`); a type it does not know becomes an `Activity`, so nothing is
dropped silently. Events carry the agent they come from, so an encoder can keep each agent's text
whole when agents run in parallel (GraphFlow fan-out).

The classes are plain slotted dataclasses: one `TextDelta` is made per model token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class RunEndReason(StrEnum):
    COMPLETED = "completed"  # the team's own termination condition, or the agent answered
    TURN_CAP = "turn_cap"  # the service's cap on agent turns (MAX_AGENT_TURNS) stopped the team
    TOKEN_CAP = "token_cap"  # noqa: S105 (not a secret) the answer was cut by the request's max_tokens
    INPUT_REQUIRED = "input_required"  # an agent waits for a person's answer
    CANCELLED = "cancelled"  # the client went away (or the server shut the run down)
    DEADLINE = "deadline"  # WORKFLOW_TIMEOUT_S passed
    FAILED = "failed"


class FailureKind(StrEnum):
    UPSTREAM_ERROR = "upstream_error"  # the LLM behind an agent failed (HTTP error, broken stream)
    UPSTREAM_TIMEOUT = "upstream_timeout"  # the LLM behind an agent did not answer in time
    INTERNAL = "internal"  # anything else: a bug, a tool that crashed the team, ...


@dataclass(slots=True)
class RunStarted:
    run_id: str
    workflow: str
    agents: tuple[str, ...]
    # The agent whose text deltas ARE the final answer as they stream (an encoder may send them as
    # the answer at once), or None: the answer is only known when the run ends.
    live_answer_agent: str | None = None


@dataclass(slots=True)
class AgentTurnStarted:
    agent: str


@dataclass(slots=True)
class AgentTurnEnded:
    agent: str


@dataclass(slots=True)
class TextDelta:
    """Text an agent writes: model tokens as they stream, or a whole message that was not streamed."""

    agent: str
    text: str


@dataclass(slots=True)
class Thought:
    """Text a model wrote beside its tool calls, or its reasoning (not streamed before)."""

    agent: str
    text: str


@dataclass(slots=True)
class ThoughtDelta:
    """A piece of a model's reasoning as it streams (`<think>…</think>`, an upstream's
    `reasoning_content`): activity, never the answer. `ThoughtEnded` closes the thought."""

    agent: str
    text: str


@dataclass(slots=True)
class ThoughtEnded:
    agent: str


@dataclass(slots=True)
class ToolCallRequested:
    agent: str
    call_id: str
    tool: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(slots=True)
class ToolResult:
    agent: str
    call_id: str
    tool: str
    content: str
    is_error: bool = False


@dataclass(slots=True)
class Handoff:
    agent: str
    target: str
    text: str = ""


@dataclass(slots=True)
class CodeGenerated:
    agent: str
    code: str


@dataclass(slots=True)
class CodeExecuted:
    agent: str
    output: str
    exit_code: int


@dataclass(slots=True)
class MemoryQueried:
    agent: str
    results: tuple[str, ...]


@dataclass(slots=True)
class SpeakerSelected:
    """A selector or orchestrator chose who speaks next."""

    agent: str
    selected: tuple[str, ...]


class InputKind(StrEnum):
    USER_PROXY = "user_proxy"  # a UserProxyAgent asked (the answer becomes its message)
    HANDOFF = "handoff"  # an agent handed off to the user (the answer is handed back to it)


@dataclass(slots=True)
class InputRequested:
    """An agent waits for a person (a UserProxyAgent, or a handoff to the user); `prompt` is the
    question the person is asked to answer. `kind` says how the answer goes back to the team when
    the run is resumed from its saved state."""

    agent: str
    prompt: str
    kind: InputKind = InputKind.USER_PROXY


@dataclass(slots=True)
class ModelUsage:
    """One model call of the run (selector, orchestrator and code generation included)."""

    agent: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


@dataclass(slots=True)
class Activity:
    """An AgentChat event or message of a type the service does not know: shown, never dropped."""

    agent: str
    event_type: str
    text: str


@dataclass(slots=True)
class FinalAnswer:
    agent: str | None
    text: str
    truncated: bool = False  # the model call that wrote it stopped at max_tokens


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0  # model calls that reported their usage
    started_calls: int = 0  # model calls started, finished or not (a cancelled run's count too)

    def add(self, usage: ModelUsage) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.calls += 1

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class RunEnded:
    reason: RunEndReason
    usage: Usage = field(default_factory=Usage)
    failure: FailureKind | None = None
    input_request: InputRequested | None = None


RunEvent = (
    RunStarted
    | AgentTurnStarted
    | AgentTurnEnded
    | TextDelta
    | Thought
    | ThoughtDelta
    | ThoughtEnded
    | ToolCallRequested
    | ToolResult
    | Handoff
    | CodeGenerated
    | CodeExecuted
    | MemoryQueried
    | SpeakerSelected
    | InputRequested
    | ModelUsage
    | Activity
    | FinalAnswer
    | RunEnded
)
