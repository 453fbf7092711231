"""What the UI check concludes from the proxy's records and the page's text (no I/O here)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Open WebUI's background tasks send one user message that opens with this header and ends with the JSON
# shape it wants back; the shape names the task.
_TASK_HEADER = "### Task:"
_TASK_KEYS = (
    ('"follow_ups"', "follow_ups"),
    ('"title"', "title"),
    ('"tags"', "tags"),
    ('"queries"', "queries"),
    ('"text"', "autocomplete"),
)


@dataclass
class StreamSummary:
    """A chat completion as the service sent it: what went to ``content`` and what went to reasoning."""

    content: str = ""
    reasoning: str = ""
    reasoning_agents: list[str] = field(default_factory=list)
    content_agents: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    final_answer_agent: str | None = None
    tool_calls: int = 0
    errors: list[str] = field(default_factory=list)
    done: bool = False


def _add_agent(agents: list[str], name: object) -> None:
    if isinstance(name, str) and name and name not in agents:
        agents.append(name)


def _delta_reasoning(delta: dict[str, Any]) -> str:
    # The service sends the same text in both fields; a client reads whichever it knows.
    value = delta.get("reasoning_content")
    if not isinstance(value, str):
        value = delta.get("reasoning")
    return value if isinstance(value, str) else ""


def parse_completion(text: str, streamed: bool) -> StreamSummary:
    """Summarize a recorded response body: SSE events when ``streamed``, else one JSON object."""
    out = StreamSummary()
    if not streamed:
        try:
            body = json.loads(text)
        except ValueError:
            out.errors.append(f"not JSON: {text[:200]!r}")
            return out
        if "error" in body:
            out.errors.append(json.dumps(body["error"])[:300])
            return out
        message = body["choices"][0]["message"]
        out.content = message.get("content") or ""
        out.reasoning = _delta_reasoning(message)
        out.finish_reason = body["choices"][0].get("finish_reason")
        out.tool_calls = len(message.get("tool_calls") or [])
        out.done = True
        return out
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            out.done = True
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            out.errors.append(f"bad event: {data[:200]!r}")
            continue
        if "error" in chunk:
            out.errors.append(json.dumps(chunk["error"])[:300])
            continue
        if chunk.get("final_answer_agent"):
            out.final_answer_agent = chunk["final_answer_agent"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = _delta_reasoning(delta)
            if piece:
                out.reasoning += piece
                _add_agent(out.reasoning_agents, delta.get("name"))
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.content += content
                _add_agent(out.content_agents, delta.get("name"))
            out.tool_calls += len(delta.get("tool_calls") or [])
            if choice.get("finish_reason"):
                out.finish_reason = choice["finish_reason"]
    return out


def task_kind(messages: Sequence[dict[str, Any]]) -> str | None:
    """The Open WebUI background task a request is (title, tags, follow_ups, ...), or None for a chat turn."""
    if not messages:
        return None
    last = messages[-1].get("content")
    if not isinstance(last, str) or not last.lstrip().startswith(_TASK_HEADER):
        return None
    for marker, kind in _TASK_KEYS:
        if marker in last:
            return kind
    return "other_task"


_MARKDOWN = re.compile(r"[*_`#>|~\\]")
_SPACE = re.compile(r"\s+")


def plain(text: str) -> str:
    """Text without markdown markers, whitespace collapsed: what a rendered page and its source share."""
    return _SPACE.sub(" ", _MARKDOWN.sub("", text)).strip()


def snippets(text: str, words: int = 6, limit: int = 4) -> list[str]:
    """A few word runs from ``text`` (one per paragraph) to look for on the page."""
    found: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        flat = plain(para).split(" ")
        if len(flat) >= 3:
            found.append(" ".join(flat[:words]))
        if len(found) >= limit:
            break
    return found


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'PASS' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


def check(name: str, ok: bool, detail: str) -> Check:
    return Check(name, bool(ok), detail)


def all_passed(checks: Iterable[Check]) -> bool:
    return all(c.ok for c in checks)
