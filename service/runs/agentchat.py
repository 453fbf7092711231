"""AgentChat -> run events: the one place that knows AgentChat's message and event types.

`AgentChatTranslator` is stateful, one per run. It is fed three things, in the order they happen:
- `token(agent, text)`: a model token, handed over by the agent's instrumented model client while
  the model streams (tokens do not travel over AgentChat's message bus);
- `model_call(...)`: the usage of each model call, from the same clients (selector and orchestrator
  calls included, which AgentChat's messages do not report);
- `message(item)`: each item of `run_stream` (agent messages and events, the task's own messages).

It opens and closes agent turns, cleans text (`service.runs.text`), emits a message's text only if
it was not streamed token by token already, and keeps what the final answer needs.

The answer is shown once. In a run with a live answer agent, that agent's text is the answer and
the others' text streams into the activity. Without one, any agent's text may turn out to be the
answer, so it is held back (with what follows it in that agent's turn) until the run shows it is not:
the agent calls a tool or does anything else, another agent's message arrives, or any model call
starts. When the run ends, the held text that is the answer is left out of the activity.

A model's reasoning is activity, never the answer: a streamed call's leading `<think>…</think>`
block (R1-style models, and an upstream's `reasoning_content`, which AgentChat's client hands on in
such a block) becomes `ThoughtDelta`s then `ThoughtEnded`; a whole message's, a `Thought`. The
reasoning AgentChat then reports (`ThoughtEvent`) is not repeated.

Mapping (every type of `autogen_agentchat.messages` 0.7.5):

| AgentChat                         | run event                                   |
|-----------------------------------|---------------------------------------------|
| ModelClientStreamingChunkEvent    | TextDelta, or ThoughtDelta (as `token`)     |
| TextMessage, StructuredMessage    | TextDelta (unless streamed); answer         |
| MultiModalMessage                 | TextDelta of its text parts; answer         |
| ToolCallSummaryMessage            | answer (its results were ToolResult events) |
| ThoughtEvent                      | Thought (unless streamed)                   |
| ToolCallRequestEvent              | ToolCallRequested, one per call             |
| ToolCallExecutionEvent            | ToolResult, one per result                  |
| HandoffMessage                    | Handoff (to `user`: InputRequested); answer |
| UserInputRequestedEvent           | InputRequested                              |
| MemoryQueryEvent                  | MemoryQueried                               |
| CodeGenerationEvent               | CodeGenerated                               |
| CodeExecutionEvent                | CodeExecuted                                |
| SelectSpeakerEvent                | SpeakerSelected                             |
| SelectorEvent, StopMessage, any other type | Activity                           |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    CodeExecutionEvent,
    CodeGenerationEvent,
    HandoffMessage,
    MemoryQueryEvent,
    ModelClientStreamingChunkEvent,
    MultiModalMessage,
    SelectSpeakerEvent,
    StopMessage,
    StructuredMessage,
    TextMessage,
    ThoughtEvent,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
    ToolCallSummaryMessage,
    UserInputRequestedEvent,
)

from service.runs.events import (
    Activity,
    AgentTurnEnded,
    AgentTurnStarted,
    CodeExecuted,
    CodeGenerated,
    FinalAnswer,
    Handoff,
    InputKind,
    InputRequested,
    MemoryQueried,
    ModelUsage,
    RunEvent,
    SpeakerSelected,
    TextDelta,
    Thought,
    ThoughtDelta,
    ThoughtEnded,
    ToolCallRequested,
    ToolResult,
    Usage,
)
from service.runs.text import DEFAULT_MARKERS, TextFilter, ThinkSplitter, clean_text, split_thinking

DEFAULT_INPUT_PROMPT = "The team is waiting for your answer."
USER_TARGET = "user"


def message_text(message: BaseChatMessage) -> str:
    """The text a person would read of an agent's message (images and other parts left out)."""
    if isinstance(message, MultiModalMessage):
        return "\n".join(part for part in message.content if isinstance(part, str))
    return message.to_text()


@dataclass
class _Turn:
    """An agent's open turn: its text filter, and whether tokens streamed since its last message
    (`streamed`: text; `streamed_thought`: reasoning); the model call's reasoning splitter, and the
    filter of the reasoning streaming now."""

    filter: TextFilter
    streamed: bool = False
    streamed_thought: bool = False
    splitter: ThinkSplitter = field(default_factory=ThinkSplitter)
    thought: TextFilter | None = None
    said: str = ""  # the text the agent wrote beside its last tool calls (a handoff's, say)


@dataclass
class AgentChatTranslator:
    """One run's translation state (see the module docstring)."""

    members: frozenset[str]
    task_message_ids: frozenset[int] = frozenset()
    live_answer_agent: str | None = None
    markers: tuple[str, ...] = DEFAULT_MARKERS
    # The tools through which agents hand off (`transfer_to_<agent>`): the handoff says it all.
    handoff_tools: frozenset[str] = frozenset()
    usage: Usage = field(default_factory=Usage)
    input_request: InputRequested | None = None
    _turns: dict[str, _Turn] = field(default_factory=dict)
    _answer: tuple[str, str] | None = None
    _last_text: dict[str, str] = field(default_factory=dict)
    _live_text: list[str] = field(default_factory=list)
    _live_turns: int = 0
    _last_finish_reason: dict[str, str] = field(default_factory=dict)
    # Agent -> its events held back while its text may be the answer (see the module docstring).
    _held: dict[str, list[RunEvent]] = field(default_factory=dict)

    @property
    def _holding(self) -> bool:
        return self.live_answer_agent is None

    # --- inputs -------------------------------------------------------------------------------
    def token(self, agent: str, text: str) -> list[RunEvent]:
        """A model token of `agent` (the hot path: one call per token of a streamed run)."""
        turn = self._turns.get(agent)
        events: list[RunEvent] = []
        if turn is None:
            turn = self._open(agent, events)
        if not turn.splitter.answering:
            thought, text, thought_ended = turn.splitter.feed(text)
            self._reason(agent, turn, thought, thought_ended, events)
            if not text:
                return events
        turn.streamed = True
        cleaned = turn.filter.feed(text)
        if cleaned:
            if agent == self.live_answer_agent:
                self._live_text.append(cleaned)
            events.append(TextDelta(agent, cleaned))
        return self._hold(events) if self._holding else events

    def call_started(self) -> list[RunEvent]:
        """A model call starts (any agent's, a selector's): the run goes on, so the text held back
        so far is not the answer."""
        if not self._held:
            return []
        events: list[RunEvent] = []
        for held in self._held.values():
            events.extend(held)
        self._held.clear()
        return events

    def model_call(
        self, agent: str, model: str, prompt_tokens: int, completion_tokens: int, finish_reason: str
    ) -> list[RunEvent]:
        """A model call ended (after its tokens, before the messages made of its result)."""
        usage = ModelUsage(agent, model, prompt_tokens, completion_tokens, finish_reason)
        self.usage.add(usage)
        self._last_finish_reason[agent] = finish_reason
        events: list[RunEvent] = []
        turn = self._turns.get(agent)
        if turn is not None:
            self._end_call(agent, turn, events)
            turn.said = ""  # what this call's result says comes next
        events.append(usage)
        return self._hold(events) if self._holding else events

    def message(self, item: BaseAgentEvent | BaseChatMessage) -> list[RunEvent]:
        """The run events of one item of `run_stream`."""
        if id(item) in self.task_message_ids:
            return []
        events: list[RunEvent] = []
        agent = item.source
        if isinstance(item, ModelClientStreamingChunkEvent):
            return self.token(agent, item.content)
        if isinstance(item, SelectSpeakerEvent):
            return [SpeakerSelected(agent, tuple(item.content))]
        if isinstance(item, BaseChatMessage):
            if self._holding and not isinstance(item, StopMessage):
                # A later message of another agent: what they hold back is not the answer.
                for other in [other for other in self._held if other != agent]:
                    events.extend(self._held.pop(other))
            self._chat_message(item, events)
        else:
            self._agent_event(item, events)
        return self._hold(events) if self._holding else events

    def requested_input(
        self, agent: str, prompt: str | None = None, kind: InputKind = InputKind.USER_PROXY
    ) -> list[RunEvent]:
        """An agent asks for a person's input (a UserProxyAgent's input function, or a handoff to
        the user). The question is `prompt`, or else the last thing another agent said."""
        if self.input_request is not None:
            return []
        question = prompt or self._question_for(agent)
        self.input_request = InputRequested(agent, question, kind)
        return [self.input_request]

    def finish(self) -> list[RunEvent]:
        """Close the open turns and state the final answer (the held text that is the answer is
        left out; the rest is released)."""
        events: list[RunEvent] = []
        for agent in list(self._turns):
            self._close(agent, events)
        if self._holding:
            events = self._hold(events)
        answer = self.final_answer()
        for held in self._held.values():
            events.extend(_without_answer(held, answer.text))
        self._held.clear()
        events.append(answer)
        return events

    def close_turns(self) -> list[RunEvent]:
        """Close the open turns of a run that ends without an answer: nothing is held back."""
        events: list[RunEvent] = []
        for agent in list(self._turns):
            self._close(agent, events)
        if self._holding:
            events = self._hold(events)
        return [*self.call_started(), *events]

    # --- holding back what may be the answer ------------------------------------------------
    def _hold(self, events: list[RunEvent]) -> list[RunEvent]:
        """`events` less those held back: an agent's text (and thoughts, which may be the text
        beside a handoff that ends the run), then the rest of its turn. Any other event of that
        agent (a tool call, a new turn, ...) releases what it holds, before it."""
        out: list[RunEvent] = []
        held = self._held
        for event in events:
            agent = getattr(event, "agent", None)
            if agent is None or isinstance(event, ModelUsage):
                out.append(event)
            elif isinstance(event, TextDelta | Thought) or (
                agent in held and isinstance(event, Handoff | AgentTurnEnded | InputRequested)
            ):
                waiting = held.setdefault(agent, [])
                last = waiting[-1] if waiting else None
                if type(event) is TextDelta and type(last) is TextDelta:
                    last.text += event.text
                else:
                    waiting.append(event)
            else:
                if agent in held:
                    out.extend(held.pop(agent))
                out.append(event)
        return out

    # --- the answer ---------------------------------------------------------------------------
    def final_answer(self) -> FinalAnswer:
        """The answer of the run, by the rules of docs/chat-completions.md ("Which text is the answer")."""
        if self.input_request is not None:
            return FinalAnswer(self.input_request.agent, self.input_request.prompt)
        if self._live_text:
            agent = self.live_answer_agent
            truncated = agent is not None and self._last_finish_reason.get(agent) == "length"
            return FinalAnswer(agent, "".join(self._live_text), truncated)
        if self._answer is not None:
            agent, text = self._answer
            return FinalAnswer(agent, text, self._last_finish_reason.get(agent) == "length")
        return FinalAnswer(None, "")

    # --- internals ----------------------------------------------------------------------------
    def _delta(self, agent: str, text: str) -> TextDelta:
        if agent == self.live_answer_agent:
            self._live_text.append(text)
        return TextDelta(agent, text)

    def _open(self, agent: str, events: list[RunEvent]) -> _Turn:
        turn = self._turns[agent] = _Turn(TextFilter(self.markers))
        events.append(AgentTurnStarted(agent))
        if agent == self.live_answer_agent:
            self._live_turns += 1
            if self._live_turns > 1 and self._live_text:
                events.append(self._delta(agent, "\n\n"))  # turns of the answering agent, apart
        return turn

    def _reason(self, agent: str, turn: _Turn, thought: str, ended: bool, events: list[RunEvent]) -> None:
        """Streamed reasoning of `agent`'s model call: `ThoughtDelta`s, then `ThoughtEnded`."""
        if thought:
            if turn.thought is None:
                self._flush_text(agent, events)
                turn.thought = TextFilter(self.markers)
                turn.streamed_thought = True
            cleaned = turn.thought.feed(thought)
            if cleaned:
                events.append(ThoughtDelta(agent, cleaned))
        if ended and turn.thought is not None:
            rest = turn.thought.end()
            if rest:
                events.append(ThoughtDelta(agent, rest))
            turn.thought = None
            events.append(ThoughtEnded(agent))

    def _end_call(self, agent: str, turn: _Turn, events: list[RunEvent]) -> None:
        """The rest of a streamed model call's output, and its splitter ready for the next call."""
        thought, text, ended = turn.splitter.end()
        self._reason(agent, turn, thought, ended or turn.thought is not None, events)
        if text:
            turn.streamed = True
            cleaned = turn.filter.feed(text)
            if cleaned:
                events.append(self._delta(agent, cleaned))

    def _close(self, agent: str, events: list[RunEvent]) -> None:
        turn = self._turns.pop(agent, None)
        if turn is None:
            return
        self._end_call(agent, turn, events)
        rest = turn.filter.end()
        if rest:
            events.append(self._delta(agent, rest))
        events.append(AgentTurnEnded(agent))

    def _flush_text(self, agent: str, events: list[RunEvent]) -> _Turn:
        """The agent's turn, its streamed text released, before a non-text event of that agent."""
        turn = self._turns.get(agent)
        if turn is None:
            return self._open(agent, events)
        if turn.thought is not None:
            self._reason(agent, turn, "", True, events)
        rest = turn.filter.end()
        if rest:
            events.append(self._delta(agent, rest))
        turn.filter = TextFilter(self.markers)
        return turn

    @staticmethod
    def _streamed_already(turn: _Turn) -> bool:
        """Whether the message or thought that closes a model call arrived token by token before
        (the agent's model client streams each of its calls): then it is not repeated. The mark
        is consumed either way, so the next model call starts afresh."""
        streamed, turn.streamed = turn.streamed, False
        return streamed

    def _text(self, agent: str, text: str, events: list[RunEvent]) -> None:
        """A message's text, and the reasoning it may start with (a model whose client leaves it in)."""
        turn = self._turns.get(agent) or self._open(agent, events)
        reasoning, text = split_thinking(text)
        if reasoning and not self._streamed_thought_already(turn):
            self._thought(agent, clean_text(reasoning, self.markers), events)
        cleaned = clean_text(text, self.markers)
        if self._streamed_already(turn) or not cleaned:
            return
        events.append(self._delta(agent, cleaned))

    def _thought_event(self, agent: str, text: str, events: list[RunEvent]) -> None:
        """A `ThoughtEvent`: a model's reasoning, or the text it wrote beside its tool calls (which
        may itself start with reasoning)."""
        turn = self._turns.get(agent) or self._open(agent, events)
        reasoning, said = (clean_text(part, self.markers) for part in split_thinking(text))
        if said:
            turn.said = said
            self._remember(agent, said, answer=False)
        if self._streamed_thought_already(turn) or self._streamed_already(turn):
            return
        self._thought(agent, reasoning, events)
        self._thought(agent, said, events)

    def _thought(self, agent: str, text: str, events: list[RunEvent]) -> None:
        if text:
            self._flush_text(agent, events)
            events.append(Thought(agent, text))

    @staticmethod
    def _streamed_thought_already(turn: _Turn) -> bool:
        """Whether the reasoning of the model call just reported streamed as `ThoughtDelta`s (the
        mark is consumed)."""
        streamed, turn.streamed_thought = turn.streamed_thought, False
        return streamed

    def _question_for(self, agent: str) -> str:
        own = self._last_text.get(agent)
        if own:
            return own
        others = [text for source, text in self._last_text.items() if source != agent]
        return others[-1] if others else DEFAULT_INPUT_PROMPT

    def _remember(self, agent: str, text: str, *, answer: bool) -> None:
        cleaned = clean_text(text, self.markers)
        if not cleaned:
            return
        self._last_text.pop(agent, None)
        self._last_text[agent] = cleaned  # most recent last
        if answer:
            self._answer = (agent, cleaned)

    def _chat_message(self, message: BaseChatMessage, events: list[RunEvent]) -> None:
        agent = message.source
        if isinstance(message, HandoffMessage):
            # A run that ends at a handoff (HandoffTermination) answers with what the agent wrote
            # beside it; handed to an agent outside the team, with the handoff's own message.
            turn = self._turns.get(agent)
            said = turn.said if turn is not None else ""
            if said:
                self._answer = (agent, said)
            elif message.target not in self.members and message.target != USER_TARGET:
                self._remember(agent, message.content, answer=True)
            self._flush_text(agent, events)
            events.append(Handoff(agent, message.target, clean_text(message.content, self.markers)))
            self._close(agent, events)
            if message.target not in self.members and message.target == USER_TARGET:
                events.extend(self.requested_input(agent, kind=InputKind.HANDOFF))
            return
        if isinstance(message, ToolCallSummaryMessage):
            turn = self._turns.get(agent) or self._open(agent, events)
            turn.streamed = False
            self._remember(agent, message.content, answer=True)
            self._close(agent, events)
            return
        if isinstance(message, StopMessage):
            events.append(Activity(agent, type(message).__name__, message.content))
            return
        text = message_text(message)
        self._text(agent, text, events)
        self._remember(
            agent,
            split_thinking(text)[1],
            answer=isinstance(message, TextMessage | MultiModalMessage | StructuredMessage),
        )
        self._close(agent, events)

    def _agent_event(self, event: BaseAgentEvent, events: list[RunEvent]) -> None:
        agent = event.source
        if isinstance(event, ThoughtEvent):
            self._thought_event(agent, event.content, events)
        elif isinstance(event, ToolCallRequestEvent):
            self._flush_text(agent, events)
            events.extend(
                ToolCallRequested(agent, call.id, call.name, call.arguments)
                for call in event.content
                if call.name not in self.handoff_tools
            )
        elif isinstance(event, ToolCallExecutionEvent):
            self._flush_text(agent, events)
            events.extend(
                ToolResult(agent, result.call_id, result.name, result.content, bool(result.is_error))
                for result in event.content
                if result.name not in self.handoff_tools
            )
        elif isinstance(event, UserInputRequestedEvent):
            events.extend(self.requested_input(agent))
        elif isinstance(event, MemoryQueryEvent):
            self._flush_text(agent, events)
            events.append(MemoryQueried(agent, _texts(item.content for item in event.content)))
        elif isinstance(event, CodeGenerationEvent):
            self._flush_text(agent, events)
            code = "\n\n".join(block.code for block in event.code_blocks) or event.content
            events.append(CodeGenerated(agent, code))
        elif isinstance(event, CodeExecutionEvent):
            self._flush_text(agent, events)
            events.append(CodeExecuted(agent, event.result.output, event.result.exit_code))
        else:
            events.append(Activity(agent, type(event).__name__, event.to_text()))


def _without_answer(held: list[RunEvent], answer: str) -> list[RunEvent]:
    """Held events less the answer's text: the text, or the thought (beside a handoff), that is it."""
    text = "".join(event.text for event in held if isinstance(event, TextDelta))
    if text and text == answer:
        return [event for event in held if not isinstance(event, TextDelta)]
    return [event for event in held if not (isinstance(event, Thought) and event.text == answer)]


def _texts(items: Iterable[object]) -> tuple[str, ...]:
    return tuple(item if isinstance(item, str) else str(item) for item in items)
