"""The UI check's conclusions (uicheck/checks.py): how it reads a recorded stream and Open WebUI's tasks.

The browser run itself is `make ui-check` (heavy, its own venv); these pure parts run with `make test`.
"""

from __future__ import annotations

import json
from typing import Any

from uicheck.checks import parse_completion, plain, snippets, task_kind


def sse(*chunks: dict[str, Any], done: bool = True) -> str:
    events = [f"data: {json.dumps(c)}\n\n" for c in chunks]
    if done:
        events.append("data: [DONE]\n\n")
    return ": ping\n\n" + "".join(events)


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "demo-team",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def test_a_stream_splits_into_answer_and_activity_by_agent() -> None:
    text = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Plan: one.", "reasoning": "Plan: one.", "name": "planner"}),
        chunk({"reasoning_content": " Draft.", "reasoning": " Draft.", "name": "writer"}),
        chunk({"reasoning": "only-reasoning", "name": "writer"}),
        chunk({"content": "The answer", "name": "reviewer"}),
        chunk({"content": ".", "name": "reviewer"}),
        chunk({}, "stop", final_answer_agent="reviewer"),
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 3}},
    )
    s = parse_completion(text, streamed=True)
    assert s.content == "The answer."
    # Both fields carry the same text: it is read once, from whichever is there.
    assert s.reasoning == "Plan: one. Draft.only-reasoning"
    assert s.reasoning_agents == ["planner", "writer"]
    assert s.content_agents == ["reviewer"]
    assert (s.finish_reason, s.final_answer_agent, s.done, s.errors, s.tool_calls) == (
        "stop",
        "reviewer",
        True,
        [],
        0,
    )


def test_a_stream_cut_short_or_failing_is_not_done() -> None:
    cut = parse_completion(sse(chunk({"content": "par"}), done=False), streamed=True)
    assert not cut.done
    failed = parse_completion(
        sse(chunk({"content": "x"}), {"error": {"message": "upstream", "type": "server_error"}}),
        streamed=True,
    )
    assert failed.errors and "upstream" in failed.errors[0]


def test_tool_calls_in_a_stream_are_counted() -> None:
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    s = parse_completion(sse(chunk({"tool_calls": [call]}), chunk({}, "tool_calls")), streamed=True)
    assert s.tool_calls == 1


def test_a_non_streaming_body_is_read_the_same_way() -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Answer.", "reasoning_content": "work"},
                "finish_reason": "stop",
            }
        ]
    }
    s = parse_completion(json.dumps(body), streamed=False)
    assert (s.content, s.reasoning, s.done) == ("Answer.", "work", True)
    assert parse_completion('{"error": {"message": "nope"}}', streamed=False).errors
    assert parse_completion("<html>", streamed=False).errors


def task_prompt(shape: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"### Task:\nDo it.\n### Output:\nJSON format: {shape}\n"}]


def test_open_webui_background_tasks_are_told_apart_from_chat_turns() -> None:
    assert task_kind(task_prompt('{ "title": "t" }')) == "title"
    assert task_kind(task_prompt('{ "tags": ["a"] }')) == "tags"
    # The follow-ups prompt names "title"-like words in its guidelines; its JSON key decides.
    assert task_kind(task_prompt('{ "follow_ups": ["a"] } a title')) == "follow_ups"
    assert task_kind(task_prompt("free text")) == "other_task"
    assert task_kind([{"role": "user", "content": "What is a ### Task: header?"}]) is None
    assert task_kind([{"role": "user", "content": "What is AutoGen?"}]) is None
    assert task_kind([]) is None


def test_text_is_compared_without_markdown_and_sampled_per_paragraph() -> None:
    assert plain("**planner:**  Plan\n\n- `one`") == "planner: Plan - one"
    text = "**planner:** Plan for the question.\n\n**writer:** Draft.\n\n**reviewer:** Fine, it is right."
    assert snippets(text, words=3) == ["planner: Plan for", "reviewer: Fine, it"]
