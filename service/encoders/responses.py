"""Run events -> an OpenAI Responses response: its stream events, and the response object itself.

One encoder serves both modes: a stream sends the events `feed` returns; a non-streamed request
feeds the same events with `emit=False` and returns `response()`. Both give the same output items.

Output items (built over the transcript `Projection`, in `reasoning` mode):
- the team's activity: one `reasoning` item per agent turn, in the order the transcript shows the
  turns (parallel agents' turns are kept whole). Its `summary` is one `summary_text` part with the
  turn's readable transcript (the agent's text, `→ tool(args)`, `← result`, `↪ hands off to`, ...);
  the extensions `agent` and `activity` (the turn's structured events) are on the item. Never a
  `function_call` item: the server ran the tools.
- the final answer: one assistant `message` with one `output_text` part (`phase: "final_answer"`),
  streamed live when the workflow has a live answer agent, else when the run ends.

Stream events, each with `sequence_number` from 0: `response.created`, `response.in_progress`; per
reasoning item `response.output_item.added`, `response.reasoning_summary_part.added`,
`response.reasoning_summary_text.delta`…, `response.reasoning_summary_text.done`,
`response.reasoning_summary_part.done`, `response.output_item.done`; for the message
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta`…,
`response.output_text.done`, `response.content_part.done`, `response.output_item.done`; then
`response.completed` (or `response.incomplete` when a cap cut the run, or `response.failed`).

Per-token events are written from templates (`service.contract.sse.EventTemplate`) cut out of an
event encoded the regular way: the same bytes, a JSON string escape per token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from service.contract.activity import NO_ANSWER_MESSAGE
from service.contract.chat import InputRequired
from service.contract.errors import OpenAIError
from service.contract.responses import (
    CONTENT_PART_ADDED,
    CONTENT_PART_DONE,
    OUTPUT_ITEM_ADDED,
    OUTPUT_ITEM_DONE,
    OUTPUT_TEXT_DELTA,
    OUTPUT_TEXT_DONE,
    RESPONSE_COMPLETED,
    RESPONSE_CREATED,
    RESPONSE_FAILED,
    RESPONSE_IN_PROGRESS,
    RESPONSE_INCOMPLETE,
    SUMMARY_PART_ADDED,
    SUMMARY_PART_DONE,
    SUMMARY_TEXT_DELTA,
    SUMMARY_TEXT_DONE,
    IncompleteDetails,
    ItemStatus,
    OutputMessage,
    OutputText,
    ReasoningItem,
    ResponseError,
    ResponseObject,
    ResponseUsage,
    SummaryText,
    new_id,
    now,
)
from service.contract.sse import EventTemplate, encode_event, slot_mark
from service.encoders.transcript import ACTIVITY, Piece, Projection
from service.runs.events import FinalAnswer, RunEnded, RunEndReason, RunEvent, RunStarted

# How a model becomes a JSON-ready dict (the server passes one that goes through `handle_response`).
Dump = Callable[[BaseModel], dict[str, Any]]


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


@dataclass
class _Item:
    kind: Literal["reasoning", "message"]
    index: int
    id: str
    agent: str
    text: list[str] = field(default_factory=list)
    activity: list[dict[str, Any]] = field(default_factory=list)
    status: ItemStatus = "in_progress"
    template: EventTemplate | None = None

    def model(self) -> ReasoningItem | OutputMessage:
        text = "".join(self.text)
        if self.kind == "reasoning":
            return ReasoningItem(
                id=self.id,
                summary=[SummaryText(text=text)],
                status=self.status,
                agent=self.agent or None,
                activity=self.activity,
            )
        return OutputMessage(id=self.id, status=self.status, content=[OutputText(text=text)])


@dataclass
class ResponsesEncoder:
    """One response's run events -> its SSE events (`emit`) and the final response object."""

    base: ResponseObject  # the response as created: id, model, echoed request fields, in_progress
    emit: bool = True
    dump: Dump = _dump
    sequence: int = 0
    answer_agent: str | None = None
    items: list[_Item] = field(default_factory=list)
    _projection: Projection = field(default_factory=lambda: Projection("reasoning"))
    _reasoning: _Item | None = None
    _message: _Item | None = None
    _final: ResponseObject | None = None

    # --- events -------------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> list[str]:
        sequence = self.sequence
        self.sequence += 1
        if not self.emit:
            return []
        return [encode_event({"type": kind, "sequence_number": sequence, **fields}, kind)]

    def _lifecycle(self, kind: str, response: ResponseObject) -> list[str]:
        if not self.emit:
            self.sequence += 1
            return []
        return self._event(kind, response=self.dump(response))

    def feed(self, event: RunEvent) -> list[str]:
        """The SSE events of one run event (none with `emit=False`; the response is built anyway)."""
        if isinstance(event, RunStarted):
            self._projection.start(event)
            return [
                *self._lifecycle(RESPONSE_CREATED, self.base),
                *self._lifecycle(RESPONSE_IN_PROGRESS, self.base),
            ]
        if isinstance(event, FinalAnswer):
            self.answer_agent = event.agent
        if isinstance(event, RunEnded):
            return self.finish(event)
        out: list[str] = []
        for piece in self._projection.feed(event):
            if piece.channel == ACTIVITY:
                self._activity(piece, out)
            else:
                self._answer(piece.text, piece.agent, out)
        return out

    def finish(self, ended: RunEnded) -> list[str]:
        """The closing events of a run that produced an answer: the items closed, then
        `response.completed` (or `response.incomplete` when a cap cut the run)."""
        return [*self.close(ended), *self.terminal()]

    def close(self, ended: RunEnded) -> list[str]:
        """Close the output items and build the final response (`response()`); `terminal()` then
        announces it. (A stream stores the turn between the two.)"""
        out: list[str] = []
        self._close_reasoning(out)
        if self._message is None:
            self.answer_agent = None
            self._answer(NO_ANSWER_MESSAGE, "", out)
        incomplete: IncompleteDetails | None = None
        if ended.reason is RunEndReason.TOKEN_CAP:
            incomplete = IncompleteDetails(reason="max_output_tokens")
        elif ended.reason is RunEndReason.TURN_CAP:
            incomplete = IncompleteDetails(reason="max_messages")
        self._close_message(out, "incomplete" if incomplete else "completed")
        request = ended.input_request
        final = self.base.model_copy(
            update={
                "status": "incomplete" if incomplete else "completed",
                "completed_at": now(),
                "incomplete_details": incomplete,
                "output": [item.model() for item in self.items],
                "usage": ResponseUsage.of(ended.usage.prompt_tokens, ended.usage.completion_tokens),
                "final_answer_agent": self.answer_agent,
                "input_required": InputRequired(agent=request.agent, prompt=request.prompt)
                if request is not None
                else None,
            }
        )
        self._final = final
        return out

    def terminal(self) -> list[str]:
        """`response.completed`, or `response.incomplete` when a cap cut the run."""
        final = self.response()
        kind = RESPONSE_INCOMPLETE if final.status == "incomplete" else RESPONSE_COMPLETED
        return self._lifecycle(kind, final)

    def fail(self, error: OpenAIError, ended: RunEnded | None = None) -> list[str]:
        """The closing events of a run that failed after the stream started: `response.failed`
        with the error (the same code and message a non-streamed request gets with its status)."""
        out: list[str] = []
        self._close_reasoning(out, "incomplete")
        self._close_message(out, "incomplete")
        usage = ended.usage if ended is not None else None
        final = self.base.model_copy(
            update={
                "status": "failed",
                "error": ResponseError(code=error.code, message=error.message),
                "output": [item.model() for item in self.items],
                "usage": ResponseUsage.of(usage.prompt_tokens, usage.completion_tokens) if usage else None,
            }
        )
        self._final = final
        out.extend(self._lifecycle(RESPONSE_FAILED, final))
        return out

    def response(self) -> ResponseObject:
        """The final response (after `finish` or `fail`)."""
        if self._final is None:
            raise RuntimeError("the response has not ended")
        return self._final

    # --- items --------------------------------------------------------------------------------
    def _activity(self, piece: Piece, out: list[str]) -> None:
        item = self._reasoning
        starts_turn = piece.activity is not None and piece.activity.get("type") == "agent_turn"
        if item is None or starts_turn or item.agent != piece.agent:
            self._close_reasoning(out)
            item = self._open("reasoning", piece.agent, out)
            self._reasoning = item
        text = piece.text if item.text else piece.text.lstrip("\n")
        if piece.activity is not None:
            item.activity.append(piece.activity)
        if text:
            self._delta(item, text, out)

    def _answer(self, text: str, agent: str, out: list[str]) -> None:
        self._close_reasoning(out)
        item = self._message
        if item is None:
            item = self._message = self._open("message", agent, out)
        if text:
            self._delta(item, text, out)

    def _open(self, kind: Literal["reasoning", "message"], agent: str, out: list[str]) -> _Item:
        item = _Item(kind, len(self.items), new_id("rs" if kind == "reasoning" else "msg"), agent)
        self.items.append(item)
        if kind == "reasoning":
            added: dict[str, Any] = {
                "id": item.id,
                "type": "reasoning",
                "summary": [],
                "status": "in_progress",
            }
            if agent:
                added["agent"] = agent
            out.extend(self._event(OUTPUT_ITEM_ADDED, output_index=item.index, item=added))
            out.extend(
                self._event(
                    SUMMARY_PART_ADDED,
                    item_id=item.id,
                    output_index=item.index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            )
        else:
            added = {
                "id": item.id,
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
                "phase": "final_answer",
            }
            out.extend(self._event(OUTPUT_ITEM_ADDED, output_index=item.index, item=added))
            out.extend(
                self._event(
                    CONTENT_PART_ADDED,
                    item_id=item.id,
                    output_index=item.index,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                )
            )
        return item

    def _delta(self, item: _Item, text: str, out: list[str]) -> None:
        item.text.append(text)
        sequence = self.sequence
        self.sequence += 1
        if not self.emit:
            return
        template = item.template
        if template is None:
            template = item.template = self._delta_template(item)
        out.append(template.render(text, str(sequence)))

    def _delta_template(self, item: _Item) -> EventTemplate:
        kind = SUMMARY_TEXT_DELTA if item.kind == "reasoning" else OUTPUT_TEXT_DELTA
        example: dict[str, Any] = {
            "type": kind,
            "sequence_number": slot_mark(1),
            "item_id": item.id,
            "output_index": item.index,
        }
        if item.kind == "reasoning":
            example.update(summary_index=0, delta=slot_mark(0))
        else:
            example.update(content_index=0, delta=slot_mark(0), logprobs=[])
        return EventTemplate(encode_event(example, kind), 2, raw=frozenset({1}))

    def _close_reasoning(self, out: list[str], status: ItemStatus = "completed") -> None:
        item = self._reasoning
        if item is None:
            return
        self._reasoning = None
        item.status = status
        text = "".join(item.text)
        common = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
        out.extend(self._event(SUMMARY_TEXT_DONE, **common, text=text))
        out.extend(self._event(SUMMARY_PART_DONE, **common, part={"type": "summary_text", "text": text}))
        out.extend(self._event(OUTPUT_ITEM_DONE, output_index=item.index, item=self._item_dict(item)))

    def _close_message(self, out: list[str], status: ItemStatus) -> None:
        item = self._message
        if item is None or item.status != "in_progress":
            return
        item.status = status
        text = "".join(item.text)
        common = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        out.extend(self._event(OUTPUT_TEXT_DONE, **common, text=text, logprobs=[]))
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        out.extend(self._event(CONTENT_PART_DONE, **common, part=part))
        out.extend(self._event(OUTPUT_ITEM_DONE, output_index=item.index, item=self._item_dict(item)))

    def _item_dict(self, item: _Item) -> dict[str, Any]:
        if not self.emit:
            return {}
        return self.dump(item.model())


__all__ = ["ResponsesEncoder"]
