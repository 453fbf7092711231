"""Server-Sent Events encoding (`data: {json}\\n\\n`, optionally with an `event:` line).

Most events of a stream differ from each other only in a few strings (a token and the agent's
name), so they are written from a template cut out of one event encoded the regular way: per token
that is a few JSON string escapes instead of a pydantic model built, dumped and JSON-encoded. The
bytes are identical by construction (tested).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

SSE_DONE = "data: [DONE]\n\n"
SSE_KEEPALIVE = ": ping\n\n"

# The same escaping `encode_event` applies to a string inside a dict (ensure_ascii=False).
json_string: Callable[[str], str] = json.JSONEncoder(ensure_ascii=False).encode


def encode_event(data: dict[str, Any], event: str | None = None) -> str:
    """One SSE event carrying `data` as compact JSON (UTF-8 kept as is), named `event` if given."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if event is None:
        return f"data: {payload}\n\n"
    return f"event: {event}\ndata: {payload}\n\n"


def slot_mark(index: int) -> str:
    """The placeholder of slot `index` in a template's example. It cannot occur in a completion or
    response id (hex) or a model id ([A-Za-z0-9-_.:]); only the example's own strings are split."""
    return f"@@slot{index}@@"


class EventTemplate:
    """An SSE event with string slots, cut from an example event whose slots hold `slot_mark(i)`.

    A slot may appear more than once (the same text under two field names); `render` fills every
    occurrence of slot i with `values[i]`, JSON-escaped. A slot listed in `raw` stands for a JSON
    number (a stream's sequence number): the example holds its mark as a string, and `render`
    writes its value (the number's text) without quotes.
    """

    __slots__ = ("_format", "_raw")

    def __init__(self, encoded_example: str, slots: int, raw: frozenset[int] = frozenset()) -> None:
        self._raw = raw
        marks = {json_string(slot_mark(index)): index for index in range(slots)}
        pieces: list[str] = []
        seen: set[int] = set()
        rest = encoded_example
        while True:
            found = [(rest.find(mark), mark) for mark in marks if mark in rest]
            if not found:
                break
            position, mark = min(found)
            pieces.append(_literal(rest[:position]))
            pieces.append(f"{{{marks[mark]}}}")
            seen.add(marks[mark])
            rest = rest[position + len(mark) :]
        pieces.append(_literal(rest))
        if seen != set(range(slots)):
            raise ValueError("the example event does not carry every slot mark")
        # One `str.format` per event: the escaped values go in by position, in C.
        self._format = "".join(pieces)

    def render(self, *values: str) -> str:
        raw = self._raw
        if not raw:
            return self._format.format(*map(json_string, values))
        return self._format.format(
            *(value if index in raw else json_string(value) for index, value in enumerate(values))
        )


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
