"""Events written from a stream's templates are byte-identical to fully encoded chunks."""

from __future__ import annotations

import json
import random

import pytest

from service.autogen_server import encode_chunk
from service.contract.sse import EventTemplate, encode_event
from service.encoders.chat_completions import ChatStreamEncoder
from service.encoders.transcript import ACTIVITY, ANSWER, Piece

TRICKY_TEXTS = [
    "",
    "plain words ",
    'quotes " and \\ backslashes \\"',
    "control \x00 \x01 \x1f \t \n \r chars",
    "unicode é ü 漢字 🙂 and \u2028 \u2029 separators",
    "@@slot0@@ and @@slot1@@ marks inside the text",
    '"}]},"finish_reason":null} looks like the tail',
    "\ud800 a lone surrogate",
]


def stream_encoder(model: str = "demo-team") -> ChatStreamEncoder:
    return ChatStreamEncoder(
        completion_id="chatcmpl-0123abcd",
        created=1_700_000_000,
        model=model,
        mode="reasoning",
        include_usage=False,
        encode=encode_chunk,
    )


def answer_event(encoder: ChatStreamEncoder, text: str, agent: str) -> str:
    return encoder._piece_event(Piece(ANSWER, text, agent))


def activity_event(encoder: ChatStreamEncoder, text: str, agent: str) -> str:
    return encoder._piece_event(Piece(ACTIVITY, text, agent))


@pytest.mark.parametrize("text", TRICKY_TEXTS)
@pytest.mark.parametrize("agent", ["writer", "agent_with_ü", 'quote"agent'])
def test_template_events_equal_the_regular_encoding(text: str, agent: str) -> None:
    encoder = stream_encoder()
    answer = answer_event(encoder, text, agent)
    assert answer == encode_chunk(encoder.chunk({"content": text, "name": agent}))
    assert json.loads(answer[len("data: ") : -2])["choices"][0]["delta"] == {"content": text, "name": agent}
    activity = activity_event(encoder, text, agent)
    delta = {"reasoning_content": text, "reasoning": text, "name": agent}
    assert activity == encode_chunk(encoder.chunk(delta))
    assert json.loads(activity[len("data: ") : -2])["choices"][0]["delta"] == delta


def test_random_texts_and_model_ids_encode_identically() -> None:
    rng = random.Random(7)
    alphabet = [chr(code) for code in (*range(0, 0x80), 0xE9, 0x4E2D, 0x1F642, 0x2028)]
    for model in ("echo", "my.team:v2", "a-b_c"):
        encoder = stream_encoder(model)
        for _ in range(300):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
            assert answer_event(encoder, text, "planner") == encode_chunk(
                encoder.chunk({"content": text, "name": "planner"})
            )
            delta = {"reasoning_content": text, "reasoning": text, "name": "planner"}
            assert activity_event(encoder, text, "planner") == encode_chunk(encoder.chunk(delta))


def test_structured_activity_events_equal_the_regular_encoding() -> None:
    for text, agent in zip(TRICKY_TEXTS, ["writer", "agent_with_ü", 'quote"agent'] * 3, strict=False):
        encoder = stream_encoder("my.team:v2")
        activity = {"type": "tool_call", "agent": agent, "call_id": "c1", "tool": "t", "arguments": text}
        event = encoder._piece_event(Piece(ACTIVITY, text, agent, activity))
        delta = {"reasoning_content": text, "reasoning": text, "name": agent, "activity": activity}
        assert event == encode_chunk(encoder.chunk(delta))


def test_an_example_without_every_mark_is_refused() -> None:
    with pytest.raises(ValueError):
        EventTemplate('data: {"choices":[]}\n\n', 1)


def test_named_events() -> None:
    assert encode_event({"a": 1}, "response.created") == 'event: response.created\ndata: {"a":1}\n\n'
