"""Server-Sent Events encoding of chat-completion chunks (`data: {json}\\n\\n`).

A stream's content chunks differ only in `content` and `name`, so they are written from a template
cut out of one chunk encoded the regular way: per token that is two JSON string escapes instead of
a pydantic model built, dumped and JSON-encoded. The bytes are identical by construction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

SSE_DONE = "data: [DONE]\n\n"
SSE_KEEPALIVE = ": ping\n\n"

# The same escaping `encode_event` applies to a string inside a dict (ensure_ascii=False).
json_string: Callable[[str], str] = json.JSONEncoder(ensure_ascii=False).encode

# Cannot occur in a completion id (hex) or a model id ([A-Za-z0-9-_.:]); only the text is ever split.
_CONTENT_MARK = "@@content@@"
_NAME_MARK = "@@name@@"


def encode_event(data: dict[str, Any]) -> str:
    """One SSE event carrying `data` as compact JSON (UTF-8 kept as is)."""
    return f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


class ContentEventTemplate:
    """The SSE event of a content chunk `delta: {"content", "name"}` of one stream, as a template."""

    __slots__ = ("_head", "_middle", "_tail")

    def __init__(self, encoded_example: str) -> None:
        """`encoded_example`: the event of a chunk whose content is `CONTENT_MARK`, name `NAME_MARK`."""
        head, found, rest = encoded_example.partition(json_string(_CONTENT_MARK))
        middle, found_name, tail = rest.partition(json_string(_NAME_MARK))
        if not (found and found_name):
            raise ValueError("the example event does not carry the content and name marks")
        self._head, self._middle, self._tail = head, middle, tail

    @staticmethod
    def example_delta() -> dict[str, str]:
        return {"content": _CONTENT_MARK, "name": _NAME_MARK}

    def render(self, content: str, name: str) -> str:
        return f"{self._head}{json_string(content)}{self._middle}{json_string(name)}{self._tail}"
