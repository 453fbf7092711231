"""Agent text as a person should read it: a model's reasoning (`<think>…</think>`) apart from its
text, control words such as `TERMINATE` removed where an agent uses them (at the end of a message),
surrounding whitespace trimmed, the same whether the text arrives as one message or token by token.

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


THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)


class ThinkSplitter:
    """One model call's output, token by token, split into its reasoning and the rest.

    The reasoning is a `<think>…</think>` block at the start of the output (after whitespace): the
    way R1-style models write it, and the way AgentChat's OpenAI client hands on an upstream's
    `reasoning_content` deltas. `feed` returns `(thought, text, thought_ended)` pieces; `end` the
    rest, at the end of the call, and makes the splitter ready for the next call. A tag split across
    tokens is recognised; an unclosed block is reasoning to the end of the call (a call cut by
    `max_tokens` while thinking has no answer text).
    """

    __slots__ = ("_pending", "_state")

    _START, _THINKING, _ANSWER = 0, 1, 2

    def __init__(self) -> None:
        self._state = self._START
        self._pending = ""

    @property
    def answering(self) -> bool:
        """Past the reasoning (or there was none): every further piece is text, as it comes."""
        return self._state == self._ANSWER

    def feed(self, text: str) -> tuple[str, str, bool]:
        if self._state == self._ANSWER:
            return "", text, False
        buffer = self._pending + text
        if self._state == self._START:
            stripped = buffer.lstrip()
            if stripped.startswith(THINK_OPEN):
                self._state = self._THINKING
                buffer = stripped[len(THINK_OPEN) :]
            elif THINK_OPEN.startswith(stripped):  # only whitespace, or the start of the tag, so far
                self._pending = buffer
                return "", "", False
            else:
                self._state, self._pending = self._ANSWER, ""
                return "", buffer, False
        end = buffer.find(THINK_CLOSE)
        if end >= 0:
            self._state, self._pending = self._ANSWER, ""
            return buffer[:end], buffer[end + len(THINK_CLOSE) :], True
        held = _partial_tail(buffer, THINK_CLOSE)
        self._pending = buffer[len(buffer) - held :] if held else ""
        return buffer[: len(buffer) - held], "", False

    def end(self) -> tuple[str, str, bool]:
        state, pending = self._state, self._pending
        self._state, self._pending = self._START, ""
        if state == self._THINKING:
            return pending, "", True
        return "", pending, False


def _partial_tail(text: str, tag: str) -> int:
    """How many characters at the end of `text` may be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def split_thinking(text: str) -> tuple[str, str]:
    """`(reasoning, rest)` of a whole model output, as a `ThinkSplitter` fed all of it splits it."""
    splitter = ThinkSplitter()
    thought, answer, _ = splitter.feed(text)
    more_thought, more_answer, _ = splitter.end()
    return thought + more_thought, answer + more_answer


def remove_thinking(text: str) -> str:
    """`text` without its `<think>…</think>` blocks (reasoning a client sends back with its history)."""
    if THINK_OPEN not in text:
        return text
    return _THINK_BLOCK.sub("", text).strip()
