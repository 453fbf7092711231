"""Content events written from a stream's template are byte-identical to fully encoded chunks."""

from __future__ import annotations

import json
import random

import pytest

from service.api.sse import ContentEventTemplate, encode_event
from service.autogen_server import handle_response
from service.workflows.translate import StreamTranslator

TRICKY_TEXTS = [
    "",
    "plain words ",
    'quotes " and \\ backslashes \\"',
    "control \x00 \x01 \x1f \t \n \r chars",
    "unicode é ü 漢字 🙂 and \u2028 \u2029 separators",
    "@@content@@ and @@name@@ marks inside the text",
    '"}]},"finish_reason":null} looks like the tail',
    "\ud800 a lone surrogate",
]


def translator(model: str = "demo-team") -> StreamTranslator:
    return StreamTranslator(
        completion_id="chatcmpl-0123abcd",
        created=1_700_000_000,
        model=model,
        team=True,
        input_messages=frozenset(),
        encode=lambda chunk: encode_event(handle_response(chunk)),
    )


def regular_event(tr: StreamTranslator, text: str, agent: str) -> str:
    return encode_event(handle_response(tr.chunk({"content": text, "name": agent})))


@pytest.mark.parametrize("text", TRICKY_TEXTS)
@pytest.mark.parametrize("agent", ["writer", "agent_with_ü", 'quote"agent'])
def test_template_event_equals_the_regular_encoding(text: str, agent: str) -> None:
    tr = translator()
    event = tr.content_event(text, agent)
    assert event == regular_event(tr, text, agent)
    assert json.loads(event[len("data: ") : -2])["choices"][0]["delta"] == {"content": text, "name": agent}


def test_random_texts_and_model_ids_encode_identically() -> None:
    rng = random.Random(7)
    alphabet = [chr(code) for code in (*range(0, 0x80), 0xE9, 0x4E2D, 0x1F642, 0x2028)]
    for model in ("echo", "my.team:v2", "a-b_c"):
        tr = translator(model)
        for _ in range(300):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
            assert tr.content_event(text, "planner") == regular_event(tr, text, "planner")


def test_an_example_without_marks_is_refused() -> None:
    with pytest.raises(ValueError):
        ContentEventTemplate('data: {"choices":[]}\n\n')
