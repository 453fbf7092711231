"""The conformance corpus, served through the real server (gunicorn + uvicorn worker) to the official
`openai` SDK, against the scripted fake LLM in its own process.

For every shape, in both modes: the same model calls; the same answer, given by the same agent; the
team's activity in `reasoning_content` (structured in `delta.activity`), in order, never in
`content`, never as `tool_calls`; a reasoning model's thinking never in the answer; usage equal to
what the fake reported; the right finish reason; `input_required` where an agent waits for a person;
no 5xx; and no model call after the client goes away. The Responses API gives the same answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from loadtests.scripted_llm import ScriptedLLMProcess, start_scripted_llm_process
from tests.conformance.shapes import SHAPES, Shape, workflow_files
from tests.helpers.server import ServiceProcess, start_service

SERVED = [shape for shape in SHAPES if not shape.runs_code]
# Every model call of a slowed script takes this long: the run is still going when the client leaves.
SLOW_TTFT_MS = 400


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedLLMProcess]:
    log = tmp_path_factory.mktemp("llm") / "scripted.log"
    with start_scripted_llm_process(log_path=log) as process:
        yield process


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLMProcess) -> Path:
    directory = tmp_path_factory.mktemp("workflows")
    workflow_files(directory, llm.base_url, tmp_path_factory.mktemp("code"))
    return directory


def serve(tmp_path: Path, corpus: Path, **env: str) -> ServiceProcess:
    # The files keep their own base_url; their masked api_key falls back to OPENAI_API_KEY. The
    # corpus has FunctionTools and a stdio MCP server: the operator settings that allow them are on.
    code = {"ALLOW_FUNCTION_TOOLS": "true", "ALLOW_STDIO_MCP": "true"}
    return start_service(tmp_path, WORKFLOWS_DIR=str(corpus), OPENAI_API_KEY="sk-corpus", **{**code, **env})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Iterator[ServiceProcess]:
    with serve(tmp_path_factory.mktemp("service"), corpus) as process:
        yield process


def sdk(service: ServiceProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def reported_usage(llm: ScriptedLLMProcess) -> tuple[int, int]:
    """What the fake reported, summed over every model call since its last reset."""
    prompt = completion = 0
    for record in llm.requests():
        usage = (record.get("reply") or {}).get("usage") or {}
        prompt += usage.get("prompt_tokens", 0)
        completion += usage.get("completion_tokens", 0)
    return prompt, completion


def fresh(llm: ScriptedLLMProcess, shape: Shape, **reply_changes: Any) -> None:
    rules = shape.script()
    if reply_changes:
        rules = [
            rule.model_copy(update={"reply": rule.reply.model_copy(update=reply_changes)}) for rule in rules
        ]
    llm.reset()
    llm.load_script(rules)


def model_calls(llm: ScriptedLLMProcess) -> list[tuple[bool, int | None]]:
    """The calls the fake received: streamed or not, and the rule that answered (in any order:
    parallel agents call at once)."""
    return sorted(((record["stream"], record["rule"]) for record in llm.requests()), key=str)


def activity_steps(chunks: list[Any]) -> list[tuple[str, ...]]:
    steps = []
    for chunk in chunks:
        if not chunk.choices:
            continue
        activity = (chunk.choices[0].delta.model_extra or {}).get("activity")
        if activity:
            detail = activity.get("tool") or activity.get("target")
            steps.append((activity["type"], activity["agent"], *([detail] if detail else [])))
    return steps


def is_subsequence(expected: tuple[tuple[str, ...], ...], seen: list[tuple[str, ...]]) -> bool:
    remaining = iter(seen)
    return all(any(step == item[: len(step)] for item in remaining) for step in expected)


def in_order(text: str, parts: tuple[str, ...]) -> bool:
    position = 0
    for part in parts:
        found = text.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


@pytest.mark.parametrize("shape", SERVED, ids=lambda shape: shape.name)
def test_both_modes_give_the_same_answer_and_show_the_work(
    shape: Shape, service: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    client = sdk(service)
    fresh(llm, shape)
    completion = client.chat.completions.create(model=shape.name, messages=list(shape.messages))  # type: ignore[arg-type]
    assert llm.unused_rules() == [], "the team did not make the calls its script expects"
    calls = model_calls(llm)
    message = completion.choices[0].message
    assert message.content == shape.answer
    assert completion.model_extra is not None
    assert completion.model_extra.get("final_answer_agent") == shape.answer_agent
    assert completion.choices[0].finish_reason == shape.finish_reason
    assert message.tool_calls is None
    usage = completion.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == reported_usage(llm)
    transcript = str((message.model_extra or {}).get("reasoning_content") or "")
    assert in_order(transcript, shape.transcript), transcript
    required = completion.model_extra.get("input_required")
    assert (required or {}).get("agent") == shape.input_required

    fresh(llm, shape)
    chunks = list(
        client.chat.completions.create(
            model=shape.name,
            messages=list(shape.messages),  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert model_calls(llm) == calls  # the same model calls, streamed or not
    answer = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert answer == message.content  # the same answer, streamed or not
    assert all(not chunk.choices or not chunk.choices[0].delta.tool_calls for chunk in chunks)
    activity = "".join(
        str((chunk.choices[0].delta.model_extra or {}).get("reasoning_content") or "")
        for chunk in chunks
        if chunk.choices
    )
    assert in_order(activity, shape.transcript), activity
    steps = activity_steps(chunks)
    assert is_subsequence(shape.activity, steps), steps
    finish = next(chunk for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason)
    assert finish.choices[0].finish_reason == shape.finish_reason
    assert (
        finish.model_extra is not None and finish.model_extra.get("final_answer_agent") == shape.answer_agent
    )
    assert (finish.model_extra.get("input_required") or {}).get("agent") == shape.input_required
    streamed_usage = chunks[-1].usage
    assert streamed_usage is not None
    assert (streamed_usage.prompt_tokens, streamed_usage.completion_tokens) == reported_usage(llm)
    for whole in shape.extra.get("whole_turns", ()):
        assert whole in activity  # parallel agents' text is not interleaved
    if shape.never_in_answer:
        assert shape.never_in_answer in activity  # a reasoning model's thinking is activity
        pieces = [chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices]
        assert not any(shape.never_in_answer in piece for piece in pieces)


RESPONSES = [shape for shape in SERVED if shape.never_in_answer or shape.name == "structured-output"]


@pytest.mark.parametrize("shape", RESPONSES, ids=lambda shape: shape.name)
def test_the_responses_api_gives_the_same_answer_and_keeps_thinking_out_of_it(
    shape: Shape, service: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    client = sdk(service)
    question = shape.messages[-1]["content"]
    fresh(llm, shape)
    response = client.responses.create(model=shape.name, input=question, store=False)
    fresh(llm, shape)
    with client.responses.stream(model=shape.name, input=question, store=False) as stream:
        deltas = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        streamed = stream.get_final_response()
    for each in (response, streamed):
        assert each.output_text == shape.answer
        reasoning = "".join(
            part.text for item in each.output if item.type == "reasoning" for part in item.summary
        )
        assert in_order(reasoning, shape.transcript), reasoning
    assert deltas == shape.answer


@pytest.mark.parametrize("shape", SERVED, ids=lambda shape: shape.name)
def test_no_model_call_after_the_client_goes_away(
    shape: Shape, service: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    fresh(llm, shape, ttft_ms=SLOW_TTFT_MS)
    body = {"model": shape.name, "messages": list(shape.messages), "stream": True}
    with httpx.stream("POST", f"{service.base_url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and '"role"' not in line:
                break  # the first thing the team shows: the client leaves
        gone_at = time.time()
    time.sleep(1.0)  # had the team gone on, its next model call would have started by now
    idle = llm.wait_stats(lambda stats: stats["in_flight"] == 0 and stats["open_streams"] == 0, timeout=3)
    assert idle["in_flight"] == 0 and idle["open_streams"] == 0
    records = llm.requests()
    # A call may start in the instant the disconnect takes to reach the server; it is then cancelled.
    assert all(record["at"] < gone_at + 0.3 for record in records), [r["at"] - gone_at for r in records]
    late = [record for record in records if record["at"] > gone_at]
    assert all(record["outcome"] == "cancelled" for record in late), late


def test_code_execution_is_refused_unless_enabled(
    tmp_path: Path, service: ServiceProcess, corpus: Path, llm: ScriptedLLMProcess
) -> None:
    client = sdk(service)
    assert "code-execution" not in {model.id for model in client.models.list()}
    assert "ALLOW_CODE_EXECUTION=true" in service.logs()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="code-execution", messages=[{"role": "user", "content": "Run it."}]
        )
    shape = next(shape for shape in SHAPES if shape.runs_code)
    with serve(tmp_path, corpus, ALLOW_CODE_EXECUTION="true") as enabled:
        fresh(llm, shape)
        completion = sdk(enabled).chat.completions.create(model=shape.name, messages=list(shape.messages))  # type: ignore[arg-type]
        assert completion.choices[0].message.content == shape.answer
        fresh(llm, shape)
        chunks = list(
            sdk(enabled).chat.completions.create(
                model=shape.name,
                messages=list(shape.messages),  # type: ignore[arg-type]
                stream=True,
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == shape.answer
        assert is_subsequence(shape.activity, activity_steps(chunks))
