"""Run events -> OpenAI chat completions: the stream's chunks, or the whole `chat.completion`.

The mapping (also in docs/chat-completions.md):
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

import json
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.contract.activity import NO_ANSWER_MESSAGE, ActivityMode
from service.contract.chat import (
    AssistantMessage,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    FinishReason,
    InputRequired,
    Output,
    Usage,
)
from service.contract.sse import EventTemplate, slot_mark
from service.encoders.transcript import ACTIVITY, ANSWER, Piece, Projection
from service.runs.events import FinalAnswer, RunEnded, RunEndReason, RunEvent, RunStarted, TextDelta

_LENGTH_REASONS = frozenset({RunEndReason.TURN_CAP, RunEndReason.TOKEN_CAP})

# How a chunk model becomes an SSE event (the server passes one that goes through `handle_response`).
ChunkEncoder = Callable[[ChatCompletionChunk], str]


# The chunk shapes written from templates, and their slots after the stream's id (0), model (1) and
# time (2, raw): the text and the agent, and for a structured activity its JSON (raw).
ANSWER_SHAPE, ACTIVITY_SHAPE, STRUCTURED_SHAPE = "answer", "activity", "structured"
_DELTAS: dict[str, tuple[dict[str, str], frozenset[int]]] = {
    ANSWER_SHAPE: ({"content": slot_mark(3), "name": slot_mark(4)}, frozenset({2})),
    ACTIVITY_SHAPE: (
        {"reasoning_content": slot_mark(3), "reasoning": slot_mark(3), "name": slot_mark(4)},
        frozenset({2}),
    ),
    STRUCTURED_SHAPE: (
        {
            "reasoning_content": slot_mark(3),
            "reasoning": slot_mark(3),
            "name": slot_mark(4),
            "activity": slot_mark(5),
        },
        frozenset({2, 5}),
    ),
}
_skeletons: weakref.WeakKeyDictionary[ChunkEncoder, dict[str, EventTemplate]] = weakref.WeakKeyDictionary()


def _skeleton(encode: ChunkEncoder, shape: str) -> EventTemplate:
    """The process's template of a chunk shape, cut from one chunk encoded the regular way (by
    `encode`, the server's: through `handle_response`), so its events are byte for byte theirs."""
    per_encoder = _skeletons.setdefault(encode, {})
    skeleton = per_encoder.get(shape)
    if skeleton is None:
        delta, raw = _DELTAS[shape]
        # The marks stand in for an int (created) and an object (activity): the example is built
        # without validation, and its serializer's warning about those two fields is expected.
        fields: dict[str, Any] = {
            "id": slot_mark(0),
            "model": slot_mark(1),
            "created": slot_mark(2),
            "choices": [ChunkChoice(delta=delta, finish_reason=None)],
            "usage": None,
        }
        example = ChatCompletionChunk.model_construct(**fields)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoded = encode(example)
        skeleton = per_encoder[shape] = EventTemplate(encoded, 6 if shape == STRUCTURED_SHAPE else 5, raw)
    return skeleton


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
    _templates: dict[str, EventTemplate] = field(default_factory=dict)
    # The text chunks' renderers, by channel (ANSWER, ACTIVITY): looked up once per stream.
    _renders: list[Callable[[str, str], str] | None] = field(default_factory=lambda: [None, None])

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

    def _template(self, shape: str) -> EventTemplate:
        """This stream's template of a chunk shape: the process's skeleton with the stream's id,
        model and time filled in (no model built per stream)."""
        template = self._templates.get(shape)
        if template is None:
            skeleton = _skeleton(self.encode, shape)
            fixed = {0: self.completion_id, 1: self.model, 2: str(self.created)}
            template = self._templates[shape] = skeleton.bind(fixed)
        return template

    def _renderer(self, channel: int) -> Callable[[str, str], str]:
        shape = ANSWER_SHAPE if channel == ANSWER else ACTIVITY_SHAPE
        render = self._renders[channel] = self._template(shape).render_pair
        return render

    def _text_event(self, channel: int, text: str, agent: str) -> str:
        return (self._renders[channel] or self._renderer(channel))(text, agent)

    def _piece_event(self, piece: Piece) -> str:
        if piece.channel == ACTIVITY and piece.activity is not None:
            activity = json.dumps(piece.activity, separators=(",", ":"), ensure_ascii=False)
            return self._template(STRUCTURED_SHAPE).render(piece.text, piece.agent, activity)
        return self._text_event(piece.channel, piece.text, piece.agent)

    # --- events -------------------------------------------------------------------------------
    def feed(self, event: RunEvent) -> list[str]:
        """The SSE events to send for one run event (often none, one per token while text flows)."""
        if type(event) is TextDelta:
            channel = self.projection.text_channel(event)
            if channel is not None:
                render = self._renders[channel] or self._renderer(channel)
                return [render(event.text, event.agent)]
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
