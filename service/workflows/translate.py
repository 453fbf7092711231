"""Map what an AgentChat run yields onto OpenAI chat-completion chunks.

The mapping (also in the README):
- the first chunk is `delta: {"role": "assistant"}`;
- token chunks (`ModelClientStreamingChunkEvent`) become `delta: {"content", "name"}` where `name`
  is the speaking agent; in a team, a speaker header `**agent:** ` (after a blank line) is sent
  whenever the speaker changes, so a plain chat UI shows who speaks;
- an agent message that was not token-streamed is sent whole, the same way;
- `TERMINATE` markers are removed, even when split across tokens;
- the finishing chunk is `delta: {}` with `finish_reason` and `final_answer_agent`: the final
  answer is the last speaker's section, which is also what a non-streaming request returns.

Content chunks come out already SSE-encoded (`str`, from the stream's `ContentEventTemplate`); the
role, finishing and usage chunks come out as `ChatCompletionChunk` models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    ModelClientStreamingChunkEvent,
    TextMessage,
    ToolCallSummaryMessage,
)

from service.api.protocol import ChatCompletionChunk, FinishReason, Usage
from service.api.sse import ContentEventTemplate, encode_event
from service.workflows.markers import MarkerFilter, strip_markers

ANSWER_MESSAGE_TYPES = (TextMessage, ToolCallSummaryMessage)


def encode_chunk(chunk: ChatCompletionChunk) -> str:
    return encode_event(chunk.model_dump(mode="json"))


def speaker_header(agent: str, first: bool) -> str:
    return f"**{agent}:** " if first else f"\n\n**{agent}:** "


def final_answer(result: TaskResult | None) -> tuple[str | None, str]:
    """The team's final answer: the last agent text message, markers removed. (agent, text)."""
    if result is None:
        return None, ""
    for message in reversed(result.messages):
        if isinstance(message, ANSWER_MESSAGE_TYPES) and message.source not in ("user", "system"):
            text = strip_markers(message.to_text()).strip()
            if text:
                return message.source, text
    return None, ""


def hit_turn_limit(result: TaskResult | None) -> bool:
    reason = (result.stop_reason or "") if result else ""
    return "Maximum number of" in reason


def usage_of(result: TaskResult | None) -> tuple[int, int]:
    """(prompt, completion) tokens reported by the model clients of the run."""
    prompt = completion = 0
    if result is not None:
        for message in result.messages:
            usage = message.models_usage
            if usage is not None:
                prompt += usage.prompt_tokens
                completion += usage.completion_tokens
    return prompt, completion


@dataclass
class StreamTranslator:
    """Stateful translation of one run's events into chunks (one instance per stream)."""

    completion_id: str
    created: int
    model: str
    team: bool
    input_messages: frozenset[int]
    token_cap: int | None = None
    on_agent_message: Callable[[str], None] = lambda agent: None
    encode: Callable[[ChatCompletionChunk], str] = encode_chunk
    speaker: str | None = None
    streamed_text: int = 0
    completion_pieces: int = 0
    capped: bool = False
    _filters: dict[str, MarkerFilter] = field(default_factory=dict)
    _content_template: ContentEventTemplate | None = None

    def chunk(self, delta: dict[str, str], finish_reason: FinishReason | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate(
            {
                "id": self.completion_id,
                "created": self.created,
                "model": self.model,
                "choices": [{"delta": delta, "finish_reason": finish_reason}],
            }
        )

    def start(self) -> ChatCompletionChunk:
        return self.chunk({"role": "assistant", "content": ""})

    def content_event(self, text: str, agent: str) -> str:
        """The SSE event of a content chunk, byte for byte what `encode(chunk(...))` would give."""
        template = self._content_template
        if template is None:
            example = self.encode(self.chunk(ContentEventTemplate.example_delta()))
            template = self._content_template = ContentEventTemplate(example)
        return template.render(text, agent)

    def on_event(self, event: BaseAgentEvent | BaseChatMessage | TaskResult) -> list[str]:
        """Chunks to send for one item of `run_stream`."""
        if self.capped:
            return []
        if isinstance(event, ModelClientStreamingChunkEvent):
            return self.on_token(event.source, event.content)
        if isinstance(event, BaseChatMessage) and id(event) not in self.input_messages:
            self.on_agent_message(event.source)
            if not isinstance(event, ANSWER_MESSAGE_TYPES):
                return []
            if event.source in self._filters:  # streamed already: only release a held-back tail
                return self._content(event.source, self._filters.pop(event.source).flush(), piece=False)
            return self._content(event.source, strip_markers(event.to_text()), piece=False)
        return []

    def on_token(self, agent: str, text: str) -> list[str]:
        """Chunks to send for one model token of `agent`."""
        if self.capped:
            return []
        return self._content(agent, self._filter(agent).feed(text), piece=True)

    def finish(self, result: TaskResult | None) -> ChatCompletionChunk:
        agent, _ = final_answer(result)
        reason: FinishReason = "length" if self.capped or hit_turn_limit(result) else "stop"
        chunk = self.chunk({}, reason)
        if agent is not None:
            chunk.final_answer_agent = agent  # type: ignore[attr-defined]  # extension field
        return chunk

    def usage_chunk(self, usage: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.completion_id, created=self.created, model=self.model, choices=[], usage=usage
        )

    def _filter(self, source: str) -> MarkerFilter:
        marker_filter = self._filters.get(source)
        if marker_filter is None:
            marker_filter = self._filters[source] = MarkerFilter()
        return marker_filter

    def _content(self, agent: str, text: str, *, piece: bool) -> list[str]:
        if not text:
            return []
        events: list[str] = []
        if self.team and agent != self.speaker:
            events.append(self.content_event(speaker_header(agent, self.speaker is None), agent))
        self.speaker = agent
        events.append(self.content_event(text, agent))
        self.streamed_text += len(text)
        self.completion_pieces += 1 if piece else max(1, len(text.split()))
        if self.token_cap is not None and self.completion_pieces >= self.token_cap:
            self.capped = True
        return events
