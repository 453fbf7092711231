"""Agent text as a person should read it: control words such as `TERMINATE` removed where an agent
uses them (at the end of a message), surrounding whitespace trimmed, the same whether the text
arrives as one message or token by token.

`clean_text(text)` is, by definition, one `TextFilter` fed the whole text: a streamed answer (the
concatenation of `feed` results and `end`) is therefore byte for byte the non-streamed one, however
the tokens are split. A marker inside a sentence ("How do I TERMINATE a process?") is text and kept;
only markers followed by nothing but whitespace and `.`/`!` up to the end of the message are removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_MARKERS: tuple[str, ...] = ("TERMINATE",)


class _Grammar:
    """Regexes of one set of markers (compiled once per marker set)."""

    _cache: dict[tuple[str, ...], _Grammar] = {}  # noqa: RUF012 (a process-wide cache of immutable values)

    def __init__(self, markers: tuple[str, ...]) -> None:
        alternatives = "|".join(re.escape(marker) for marker in sorted(markers, key=len, reverse=True))
        prefixes = sorted(
            {marker[:size] for marker in markers for size in range(1, len(marker))}, key=len, reverse=True
        )
        partial = "|".join(re.escape(prefix) for prefix in prefixes)
        full = rf"(?:(?:{alternatives})[\s.!]*)"
        # What may still turn out to be trailing: whitespace, whole markers (with their punctuation)
        # and the start of a marker, at the very end of the text so far.
        self.held_tail = re.compile(rf"\s*{full}*(?:{partial})?\Z" if partial else rf"\s*{full}*\Z")
        self.markers_at_end = re.compile(rf"\s*{full}+\Z")
        # A piece with none of these characters can hold back nothing but trailing whitespace.
        self.first_chars = "".join(sorted({marker[0] for marker in markers}))

    @classmethod
    def of(cls, markers: tuple[str, ...]) -> _Grammar:
        grammar = cls._cache.get(markers)
        if grammar is None:
            grammar = cls._cache[markers] = cls(markers)
        return grammar


class TextFilter:
    """Streaming cleaner of one message: `feed` pieces, then `end`."""

    __slots__ = ("_blank", "_grammar", "_pending", "_started")

    def __init__(self, markers: Iterable[str] = DEFAULT_MARKERS) -> None:
        self._grammar = _Grammar.of(tuple(sorted(set(markers))) or DEFAULT_MARKERS)
        self._pending = ""
        self._blank = True  # nothing but whitespace waits
        self._started = False

    def feed(self, text: str) -> str:
        """The part of the text so far that is certain to stay (leading whitespace is dropped)."""
        pending = self._pending
        if self._blank and not _has_any(text, self._grammar.first_chars):
            # The common token: no marker can start in it and only whitespace waits, so only its
            # trailing whitespace waits in turn (the general case's cut, in its fast form).
            if not self._started:
                text = text.lstrip()
                if not text:
                    return ""
                self._started = True
                pending = ""
            if not text:
                return ""
            if not text[-1].isspace():
                self._pending = ""
                return pending + text if pending else text
            body = text.rstrip()
            if not body:
                self._pending = pending + text
                return ""
            self._pending = text[len(body) :]
            return pending + body if pending else body
        buffer = pending + text
        if not self._started:
            buffer = buffer.lstrip()
            if not buffer:
                self._pending = ""
                return ""
            self._started = True
        match = self._grammar.held_tail.search(buffer)
        cut = match.start() if match else len(buffer)
        self._pending = buffer[cut:]
        self._blank = self._pending.isspace() or not self._pending
        return buffer[:cut]

    def end(self) -> str:
        """The rest, at the end of the message: trailing markers and whitespace are dropped."""
        held, self._pending = self._pending, ""
        self._blank = True
        return self._grammar.markers_at_end.sub("", held).rstrip()


def _has_any(text: str, chars: str) -> bool:
    if len(chars) == 1:
        return chars in text
    return any(char in text for char in chars)


def clean_text(text: str, markers: Iterable[str] = DEFAULT_MARKERS) -> str:
    """`text` as a streamed `TextFilter` would deliver it in total."""
    text_filter = TextFilter(markers)
    return text_filter.feed(text) + text_filter.end()
