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

# The same escaping `encode_event` applies to a string inside a dict (ensure_ascii=False): the
# encoder's own C function, without `JSONEncoder.encode`'s Python wrapper around it.
json_string: Callable[[str], str] = json.encoder.encode_basestring


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
    occurrence of slot i with `values[i]`, JSON-escaped. A slot listed in `raw` stands for JSON
    that is written as it is (a number, an object): the example holds its mark as a string, and
    `render` writes its value without quotes. `bind` fills some slots once (a stream's id, model
    and time) and gives the template of the others.
    """

    __slots__ = ("_format", "_literals", "_order", "_raw")

    def __init__(self, encoded_example: str, slots: int, raw: frozenset[int] = frozenset()) -> None:
        marks = {json_string(slot_mark(index)): index for index in range(slots)}
        literals: list[str] = []
        order: list[int] = []
        rest = encoded_example
        while True:
            found = [(rest.find(mark), mark) for mark in marks if mark in rest]
            if not found:
                break
            position, mark = min(found)
            literals.append(rest[:position])
            order.append(marks[mark])
            rest = rest[position + len(mark) :]
        literals.append(rest)
        if set(order) != set(range(slots)):
            raise ValueError("the example event does not carry every slot mark")
        self._set(literals, order, raw)

    def _set(self, literals: list[str], order: list[int], raw: frozenset[int]) -> None:
        self._literals = tuple(literals)
        self._order = tuple(order)
        self._raw = raw
        # One `str.format` per event: the escaped values go in by position, in C.
        pieces = [_literal(literals[0])]
        for slot, literal in zip(order, literals[1:], strict=True):
            pieces.append(f"{{{slot}}}")
            pieces.append(_literal(literal))
        self._format = "".join(pieces)

    def render(self, *values: str) -> str:
        raw = self._raw
        if not raw:
            return self._format.format(*map(json_string, values))
        return self._format.format(
            *(value if index in raw else json_string(value) for index, value in enumerate(values))
        )

    def render_pair(self, first: str, second: str) -> str:
        """`render` of a template with two string slots (the per-token case), without its loop."""
        return self._format.format(json_string(first), json_string(second))

    def bind(self, fixed: dict[int, str]) -> EventTemplate:
        """This template with the slots in `fixed` filled (escaped, or as they are if raw); the
        other slots keep their order and are numbered from 0."""
        remaining = sorted(set(self._order) - set(fixed))
        number = {slot: index for index, slot in enumerate(remaining)}
        literals = [self._literals[0]]
        order: list[int] = []
        for slot, literal in zip(self._order, self._literals[1:], strict=True):
            if slot in fixed:
                value = fixed[slot] if slot in self._raw else json_string(fixed[slot])
                literals[-1] += value + literal
            else:
                order.append(number[slot])
                literals.append(literal)
        bound = object.__new__(EventTemplate)
        bound._set(literals, order, frozenset(number[slot] for slot in self._raw if slot in number))
        return bound


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
