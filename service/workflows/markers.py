"""Removal of AgentChat control markers (`TERMINATE`) from text, including from token streams
where a marker may arrive split across chunks (`TERM` + `INATE`)."""

from __future__ import annotations

from service.workflows.demo_client import TERMINATE_MARKER


def strip_markers(text: str, marker: str = TERMINATE_MARKER) -> str:
    """`text` without any occurrence of the marker, with the whitespace around the cut tidied."""
    if marker not in text:
        return text
    return " ".join(part.strip() for part in text.split(marker) if part.strip())


class MarkerFilter:
    """Streaming form of `strip_markers`: holds back a tail that could be the start of a marker."""

    def __init__(self, marker: str = TERMINATE_MARKER) -> None:
        self._marker = marker
        self._pending = ""

    def feed(self, text: str) -> str:
        if not self._pending and self._marker[0] not in text:
            return text  # no marker, and no tail that could start one (the common token)
        buffer = (self._pending + text).replace(self._marker, "")
        hold = 0
        for size in range(min(len(buffer), len(self._marker) - 1), 0, -1):
            if self._marker.startswith(buffer[-size:]):
                hold = size
                break
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold] if hold else buffer

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return rest
