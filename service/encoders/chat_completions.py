"""Run events -> OpenAI chat completions: the stream's chunks, or the whole `chat.completion`.

The mapping (also in the README, "How a team run maps onto the OpenAI format"):
- the first chunk is `delta: {"role": "assistant", "content": ""}`;
- the answer: `delta: {"content", "name"}` (`name`: the agent that gives it), live when the run has a
  live answer agent, else in one chunk when the run ends; the same text as a non-streamed
  `message.content`;
- the team's activity (`STREAM_ACTIVITY=reasoning`): `delta: {"reasoning_content", "reasoning",
  "name"}` (the same text in both: clients read one or the other), plus `delta.activity` for a
  structured event (tool call, tool result, handoff, ...); never `tool_calls`: the server ran them;
- the finishing chunk: `delta: {}`, `finish_reason` (`stop`, or `length` when the service's turn
  cap or `max_tokens` cut the run), `final_answer_agent`, and `input_required` when an agent waits
  for a person; then the usage chunk when asked for, then `data: [DONE]`.

Per-token chunks are written from templates (`service.contract.sse.EventTemplate`) cut out of a chunk
encoded the regular way: two or three JSON string escapes per token instead of a model dump.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.contract.chat import (
    ActivityMode,
    AssistantMessage,
    ChatCompletionChunk,
    Choice,
    FinishReason,
    InputRequired,
    Output,
    Usage,
)
from service.contract.sse import EventTemplate, slot_mark
from service.encoders.transcript import ACTIVITY, ANSWER, Piece, Projection
from service.runs.events import FinalAnswer, RunEnded, RunEndReason, RunEvent, RunStarted, TextDelta

NO_ANSWER_MESSAGE = "The agents finished without producing an answer."
_LENGTH_REASONS = frozenset({RunEndReason.TURN_CAP, RunEndReason.TOKEN_CAP})

# How a chunk model becomes an SSE event (the server passes one that goes through `handle_response`).
ChunkEncoder = Callable[[ChatCompletionChunk], str]


def finish_reason(ended: RunEnded) -> FinishReason:
    return "length" if ended.reason in _LENGTH_REASONS else "stop"


def input_required(ended: RunEnded) -> InputRequired | None:
    request = ended.input_request
    return InputRequired(agent=request.agent, prompt=request.prompt) if request is not None else None


@dataclass
class ChatStreamEncoder:
    """One stream's run events -> SSE events of `chat.completion.chunk`s."""

    completion_id: str
    created: int
    model: str
    mode: ActivityMode
    include_usage: bool
    encode: ChunkEncoder
    projection: Projection = field(init=False)
    answer_agent: str | None = None
    _answer_template: EventTemplate | None = None
    _activity_template: EventTemplate | None = None

    def __post_init__(self) -> None:
        self.projection = Projection(self.mode)

    # --- chunks -------------------------------------------------------------------------------
    def chunk(
        self, delta: dict[str, Any], reason: FinishReason | None = None, **extra: Any
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate(
            {
                "id": self.completion_id,
                "created": self.created,
                "model": self.model,
                "choices": [{"delta": delta, "finish_reason": reason}],
                **extra,
            }
        )

    def _template(self, delta: dict[str, str], slots: int) -> EventTemplate:
        return EventTemplate(self.encode(self.chunk(delta)), slots)

    def _text_event(self, channel: int, text: str, agent: str) -> str:
        if channel == ANSWER:
            template = self._answer_template
            if template is None:
                template = self._answer_template = self._template(
                    {"content": slot_mark(0), "name": slot_mark(1)}, 2
                )
            return template.render(text, agent)
        template = self._activity_template
        if template is None:
            template = self._activity_template = self._template(
                {"reasoning_content": slot_mark(0), "reasoning": slot_mark(0), "name": slot_mark(1)}, 2
            )
        return template.render(text, agent)

    def _piece_event(self, piece: Piece) -> str:
        if piece.channel == ACTIVITY and piece.activity is not None:
            delta = {"reasoning_content": piece.text, "reasoning": piece.text, "name": piece.agent}
            return self.encode(self.chunk({**delta, "activity": piece.activity}))
        return self._text_event(piece.channel, piece.text, piece.agent)

    # --- events -------------------------------------------------------------------------------
    def feed(self, event: RunEvent) -> list[str]:
        """The SSE events to send for one run event (often none, one per token while text flows)."""
        if type(event) is TextDelta:
            channel = self.projection.text_channel(event)
            if channel is not None:
                return [self._text_event(channel, event.text, event.agent)]
        if isinstance(event, RunStarted):
            self.projection.start(event)
            return [self.encode(self.chunk({"role": "assistant", "content": ""}))]
        if isinstance(event, FinalAnswer):
            self.answer_agent = event.agent
        if isinstance(event, RunEnded):
            return self._end(event)
        return [self._piece_event(piece) for piece in self.projection.feed(event)]

    def _end(self, ended: RunEnded) -> list[str]:
        events: list[str] = []
        if not self.projection.answer_sent:
            self.answer_agent = None
            events.append(self._piece_event(Piece(ANSWER, NO_ANSWER_MESSAGE, "")))
        extra: dict[str, Any] = {}
        if self.answer_agent is not None:
            extra["final_answer_agent"] = self.answer_agent
        required = input_required(ended)
        if required is not None:
            extra["input_required"] = required.model_dump()
        events.append(self.encode(self.chunk({}, finish_reason(ended), **extra)))
        if self.include_usage:
            usage = Usage.of(ended.usage.prompt_tokens, ended.usage.completion_tokens)
            events.append(
                self.encode(
                    ChatCompletionChunk(
                        id=self.completion_id, created=self.created, model=self.model, choices=[], usage=usage
                    )
                )
            )
        return events


def completion_output(
    events: list[RunEvent], *, completion_id: str, created: int, model: str, mode: ActivityMode
) -> Output:
    """A finished run's events -> the non-streaming `chat.completion` (the same text a stream sends)."""
    projection = Projection(mode)
    answer: list[str] = []
    activity: list[str] = []
    agent: str | None = None
    ended: RunEnded | None = None
    for event in events:
        if isinstance(event, RunStarted):
            projection.start(event)
        elif isinstance(event, FinalAnswer):
            agent = event.agent
        elif isinstance(event, RunEnded):
            ended = event
            continue
        for piece in projection.feed(event):
            (answer if piece.channel == ANSWER else activity).append(piece.text)
    if ended is None:
        raise ValueError("the run did not end")
    text = "".join(answer) or NO_ANSWER_MESSAGE
    transcript = "".join(activity) if activity else None
    message = AssistantMessage(
        content=text,
        name=agent if answer else None,
        reasoning_content=transcript,
        reasoning=transcript,
    )
    return Output(
        id=completion_id,
        created=created,
        model=model,
        choices=[Choice(message=message, finish_reason=finish_reason(ended))],
        usage=Usage.of(ended.usage.prompt_tokens, ended.usage.completion_tokens),
        final_answer_agent=agent if answer else None,
        input_required=input_required(ended),
    )


__all__ = ["ACTIVITY", "NO_ANSWER_MESSAGE", "ChatStreamEncoder", "completion_output"]
