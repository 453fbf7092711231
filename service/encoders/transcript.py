"""What a person reads of a run, whatever the wire format: the answer, and the team's activity as a
transcript. Both encoders (chat completions, Responses) are built on this projection.

`Projection.feed(event)` returns `Piece`s in the order they should be shown:
- `ANSWER` pieces: the final answer. Live when the run has a live answer agent (its text deltas are
  the answer as they stream), else one piece when the run ends.
- `ACTIVITY` pieces: the transcript of the team's work: a header per agent turn, each agent's text,
  tool calls and results, handoffs, thoughts, code, memory, speaker choices, input requests. A piece
  that stands for a structured event carries it as `activity` (a JSON-ready dict).

Agents that run in parallel (GraphFlow fan-out) write at the same time. The transcript keeps each
agent's turn whole: the pieces of an agent whose turn is not the one being shown wait until that
turn ends.

The activity `mode` (`STREAM_ACTIVITY`): `reasoning` (activity and answer apart), `content` (one
transcript, the answer included, all of it `ANSWER`), `none` (the answer only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from service.contract.activity import ActivityMode
from service.runs.events import (
    Activity,
    AgentTurnEnded,
    AgentTurnStarted,
    CodeExecuted,
    CodeGenerated,
    FinalAnswer,
    Handoff,
    InputRequested,
    MemoryQueried,
    RunEvent,
    RunStarted,
    SpeakerSelected,
    TextDelta,
    Thought,
    ThoughtDelta,
    ThoughtEnded,
    ToolCallRequested,
    ToolResult,
)

ANSWER: Final = 0
ACTIVITY: Final = 1
# Text of tool results and code output shown in the transcript (the structured activity keeps more).
SHOWN_RESULT_CHARS = 1_000
KEPT_RESULT_CHARS = 16_000


@dataclass(slots=True)
class Piece:
    channel: int  # ANSWER or ACTIVITY
    text: str
    agent: str
    activity: dict[str, Any] | None = None


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _activity_piece(event: RunEvent) -> Piece | None:
    """The transcript piece of a structured event (None for events that have none)."""
    if isinstance(event, ToolCallRequested):
        return Piece(
            ACTIVITY,
            f"\n→ `{event.tool}` {event.arguments}\n",
            event.agent,
            {
                "type": "tool_call",
                "agent": event.agent,
                "call_id": event.call_id,
                "tool": event.tool,
                "arguments": event.arguments,
            },
        )
    if isinstance(event, ToolResult):
        label = "failed" if event.is_error else "returned"
        return Piece(
            ACTIVITY,
            f"\n← `{event.tool}` {label}: {_shorten(event.content, SHOWN_RESULT_CHARS)}\n",
            event.agent,
            {
                "type": "tool_result",
                "agent": event.agent,
                "call_id": event.call_id,
                "tool": event.tool,
                "content": _shorten(event.content, KEPT_RESULT_CHARS),
                "is_error": event.is_error,
            },
        )
    if isinstance(event, Handoff):
        return Piece(
            ACTIVITY,
            f"\n↪ hands off to **{event.target}**\n",
            event.agent,
            {"type": "handoff", "agent": event.agent, "target": event.target},
        )
    if isinstance(event, Thought):
        return Piece(ACTIVITY, f"{event.text}\n", event.agent, {"type": "thought", "agent": event.agent})
    if isinstance(event, CodeGenerated):
        return Piece(
            ACTIVITY,
            f"\n```\n{event.code}\n```\n",
            event.agent,
            {"type": "code_generated", "agent": event.agent, "code": _shorten(event.code, KEPT_RESULT_CHARS)},
        )
    if isinstance(event, CodeExecuted):
        return Piece(
            ACTIVITY,
            f"\n→ exit code {event.exit_code}:\n```\n{_shorten(event.output, SHOWN_RESULT_CHARS)}\n```\n",
            event.agent,
            {
                "type": "code_executed",
                "agent": event.agent,
                "output": _shorten(event.output, KEPT_RESULT_CHARS),
                "exit_code": event.exit_code,
            },
        )
    if isinstance(event, MemoryQueried):
        shown = "; ".join(_shorten(result, 200) for result in event.results)
        return Piece(
            ACTIVITY,
            f"\n(memory: {shown})\n",
            event.agent,
            {"type": "memory_query", "agent": event.agent, "results": list(event.results)},
        )
    if isinstance(event, SpeakerSelected):
        names = ", ".join(f"**{name}**" for name in event.selected)
        return Piece(
            ACTIVITY,
            f"\n({event.agent} picks {names})\n",
            event.agent,
            {"type": "speaker_selected", "agent": event.agent, "selected": list(event.selected)},
        )
    if isinstance(event, InputRequested):
        return Piece(
            ACTIVITY,
            f"\n⏸ **{event.agent}** waits for your answer\n",
            event.agent,
            {"type": "input_requested", "agent": event.agent, "prompt": event.prompt},
        )
    if isinstance(event, Activity):
        return Piece(
            ACTIVITY,
            f"\n[{event.event_type}] {_shorten(event.text, SHOWN_RESULT_CHARS)}\n",
            event.agent,
            {"type": "other", "agent": event.agent, "event_type": event.event_type},
        )
    return None


@dataclass
class _Sequencer:
    """Keeps each agent's turn whole in the transcript (see the module docstring)."""

    current: str | None = None
    waiting: dict[str, list[Piece]] = field(default_factory=dict)  # insertion order = turn order
    ended: set[str] = field(default_factory=set)

    def add(self, piece: Piece, out: list[Piece]) -> None:
        agent = piece.agent
        if self.current is None and not self.waiting:
            self.current = agent
        if agent == self.current:
            out.append(piece)
        else:
            self.waiting.setdefault(agent, []).append(piece)

    def turn_ended(self, agent: str, out: list[Piece]) -> None:
        if agent != self.current:
            if agent in self.waiting:
                self.ended.add(agent)
            return
        self.current = None
        while self.waiting:
            agent = next(iter(self.waiting))
            out.extend(self.waiting.pop(agent))
            if agent in self.ended:
                self.ended.discard(agent)
                continue
            self.current = agent
            return

    def flush(self, out: list[Piece]) -> None:
        self.current = None
        for pieces in self.waiting.values():
            out.extend(pieces)
        self.waiting.clear()
        self.ended.clear()


@dataclass
class Projection:
    """One run's events -> the pieces to show (see the module docstring). One per response."""

    mode: ActivityMode
    live_answer_agent: str | None = None
    # A team's transcript says who writes the answer; a lone agent's has nothing to add.
    team: bool = False
    answer_sent: bool = False
    # The transcript shown so far, kept in content mode (where it is the answer).
    transcript: list[str] = field(default_factory=list)
    _sequencer: _Sequencer = field(default_factory=_Sequencer)
    _tail: str = ""  # the end of the transcript shown so far
    _thinking: set[str] = field(default_factory=set)  # agents whose reasoning is streaming
    # The agent whose turn header is the last thing shown (its text may be the answer, held back).
    _bare_header: str | None = None

    def start(self, run: RunStarted) -> None:
        self.live_answer_agent = run.live_answer_agent
        self.team = len(run.agents) > 1

    def text_channel(self, event: TextDelta) -> int | None:
        """The hot path (one call per token): the channel the delta goes out on now, or None when
        it needs `feed` (the transcript is showing another agent's turn, or content mode)."""
        if event.agent == self.live_answer_agent and self.mode != "content":
            self.answer_sent = True
            return ANSWER
        if self.mode == "reasoning" and event.agent == self._sequencer.current:
            text = event.text
            self._tail = text[-2:] if len(text) >= 2 else (self._tail + text)[-2:]
            return ACTIVITY
        return None

    def feed(self, event: RunEvent) -> list[Piece]:
        out: list[Piece] = []
        if isinstance(event, TextDelta):
            if event.agent == self.live_answer_agent and self.mode != "content":
                self.answer_sent = True
                out.append(Piece(ANSWER, event.text, event.agent))
            elif self.mode != "none":
                self._transcript(Piece(ACTIVITY, event.text, event.agent), out)
        elif isinstance(event, AgentTurnStarted):
            if self.mode != "none" and not (
                event.agent == self.live_answer_agent and self.mode == "reasoning"
            ):
                header = Piece(
                    ACTIVITY,
                    f"**{event.agent}:** ",
                    event.agent,
                    {"type": "agent_turn", "agent": event.agent},
                )
                self._transcript(header, out)
            elif self.mode == "reasoning" and self.team:
                note = Piece(
                    ACTIVITY,
                    f"**{event.agent}** writes the answer.\n",
                    event.agent,
                    {"type": "agent_turn", "agent": event.agent},
                )
                self._transcript(note, out)
        elif isinstance(event, AgentTurnEnded):
            if self.mode != "none":
                self._sequencer.turn_ended(event.agent, out)
                self._packaged(out)
        elif isinstance(event, ThoughtDelta):
            if self.mode != "none":
                # A streamed thought reads as a whole one (`Thought`): its text, then a line break;
                # its first piece carries the structured activity.
                first = event.agent not in self._thinking
                self._thinking.add(event.agent)
                activity = {"type": "thought", "agent": event.agent} if first else None
                self._transcript(Piece(ACTIVITY, event.text, event.agent, activity), out)
        elif isinstance(event, ThoughtEnded):
            if event.agent in self._thinking:
                self._thinking.discard(event.agent)
                self._transcript(Piece(ACTIVITY, "\n", event.agent), out)
        elif isinstance(event, FinalAnswer):
            if self.mode != "none":
                self._sequencer.flush(out)
                self._packaged(out)
            self._answer(event, out)
        elif self.mode != "none":
            piece = _activity_piece(event)
            if piece is not None:
                self._transcript(piece, out)
        return out

    def _transcript(self, piece: Piece, out: list[Piece]) -> None:
        before = len(out)
        self._sequencer.add(piece, out)
        if len(out) > before:
            self._packaged(out, before)

    def _packaged(self, out: list[Piece], start: int = 0) -> None:
        """Pieces leaving the sequencer: turn headers get their blank line; content mode makes the
        transcript the answer; the transcript's text is kept (content mode's last check)."""
        for index in range(start, len(out)):
            piece = out[index]
            if piece.channel != ACTIVITY:
                continue
            header = piece.activity is not None and piece.activity.get("type") == "agent_turn"
            if header and self._tail:
                # A turn starts after a blank line.
                piece.text = "\n" * (2 - len(self._tail) + len(self._tail.rstrip("\n"))) + piece.text
            if header or piece.text:
                self._bare_header = piece.agent if header else None
            if self.mode == "content":
                piece.channel = ANSWER
                self.answer_sent = True
            if piece.text:
                self._tail = (self._tail + piece.text)[-2:]
            if self.mode == "content":
                self.transcript.append(piece.text)

    def _answer(self, answer: FinalAnswer, out: list[Piece]) -> None:
        """The answer, shown once: the transcript leaves it out, so a turn that only gave the
        answer ends with a note (in content mode, the answer itself)."""
        bare = answer.agent is not None and answer.agent == self._bare_header
        if self.mode == "content":
            if answer.text and answer.text not in "".join(self.transcript):
                separator = "" if bare or not self.transcript else "\n\n"
                out.append(Piece(ANSWER, separator + answer.text, answer.agent or ""))
                self.transcript.append(separator + answer.text)
            return
        if not self.answer_sent and answer.text:
            if bare and self.mode == "reasoning":
                out.append(Piece(ACTIVITY, "gives the answer.\n", answer.agent or ""))
            self.answer_sent = True
            out.append(Piece(ANSWER, answer.text, answer.agent or ""))
