"""Against a real server process (gunicorn + uvicorn worker) with the official `openai` SDK.

Includes the end-to-end path through autogen-ext's `OpenAIChatCompletionClient` to a local fake
OpenAI-compatible LLM, and the proof that a client disconnect stops the team's model calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from loadtests.fake_llm import FakeLLMProcess, start_fake_llm_process
from tests.helpers.probes import metric
from tests.helpers.server import ServiceProcess, start_service

QUESTION = [{"role": "user", "content": "What is AutoGen?"}]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with start_service(tmp_path_factory.mktemp("live"), DEMO_LLM_TOKEN_MS="1") as process:
        yield process


@pytest.fixture
def fake_llm(tmp_path: Path) -> Iterator[FakeLLMProcess]:
    with start_fake_llm_process(ttft_ms=20, token_ms=40, tokens=60, log_path=tmp_path / "fake.log") as llm:
        yield llm


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def stream_with_usage(client: openai.OpenAI, model: str) -> list[ChatCompletionChunk]:
    """Every chunk of a streamed completion of QUESTION, the usage chunk last."""
    stream = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    return list(stream)


def reasoning_of(chunk: ChatCompletionChunk) -> str:
    """The activity text of a chunk (`delta.reasoning_content`, an extension field)."""
    if not chunk.choices:
        return ""
    return str((chunk.choices[0].delta.model_extra or {}).get("reasoning_content") or "")


def assert_upstream_stopped(fake_llm: FakeLLMProcess, gone_at: float) -> None:
    """The one upstream call was dropped within a second of the client leaving, and none followed."""
    deadline = gone_at + 5
    while time.time() < deadline and fake_llm.stats()["in_flight"]:
        time.sleep(0.05)
    stats = fake_llm.stats()
    assert stats["in_flight"] == 0 and stats["cancelled"] == 1
    assert stats["last_cancelled_at"] - gone_at < 1.0
    time.sleep(2.0)  # had the team gone on, the next agent would have called the model by now
    after = fake_llm.stats()
    assert after["requests"] == 1 and after["completed"] == 0


def test_models_and_completions_with_the_sdk(service: ServiceProcess) -> None:
    client = sdk(service.base_url)
    assert {"echo", "demo-team"} <= {model.id for model in client.models.list()}
    completion = client.chat.completions.create(model="demo-team", messages=QUESTION)  # type: ignore[arg-type]
    assert "Final answer" in (completion.choices[0].message.content or "")
    chunks = stream_with_usage(client, "demo-team")
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-2].choices[0].finish_reason == "stop"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    activity = "".join(reasoning_of(chunk) for chunk in chunks)
    assert text == completion.choices[0].message.content  # the same answer, streamed or not
    assert "**planner:**" in activity and "TERMINATE" not in text + activity


def test_typed_sdk_errors_from_a_real_server(service: ServiceProcess) -> None:
    client = sdk(service.base_url)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=QUESTION)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo", messages=[])
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_worker_garbage_collector_is_tuned_after_start_up(service: ServiceProcess) -> None:
    tuned = [
        json.loads(line)
        for line in service.logs().splitlines()
        if line.startswith("{") and '"garbage collector tuned"' in line
    ]
    assert tuned, "the worker did not log its garbage-collector settings"
    assert tuned[-1]["gc_threshold"][0] == 50_000 and tuned[-1]["gc_frozen_objects"] > 10_000


def test_access_log_is_on_by_default_and_can_be_turned_off(service: ServiceProcess, tmp_path: Path) -> None:
    def access_lines(process: ServiceProcess) -> list[str]:
        return [line for line in process.logs().splitlines() if '"logger": "uvicorn.access"' in line]

    assert httpx.get(f"{service.base_url}/v1/models", timeout=10).status_code == 200
    assert any("GET /v1/models" in line for line in access_lines(service))
    with start_service(tmp_path, ACCESS_LOG="false") as quiet:
        assert httpx.get(f"{quiet.base_url}/v1/models", timeout=10).status_code == 200
        assert access_lines(quiet) == []


def test_first_chunk_arrives_before_the_team_finishes(tmp_path: Path) -> None:
    with start_service(tmp_path, DEMO_LLM_TOKEN_MS="20") as slow:
        started = time.perf_counter()
        with httpx.stream(
            "POST",
            f"{slow.base_url}/v1/chat/completions",
            json={"model": "demo-team", "messages": QUESTION, "stream": True},
            timeout=30,
        ) as response:
            lines = response.iter_lines()
            first_content = next(line for line in lines if '"reasoning_content":"**planner' in line)
            first_at = time.perf_counter() - started
            rest = [line for line in lines if line]
        total = time.perf_counter() - started
    assert first_content and rest[-1] == "data: [DONE]"
    # Three agents x ~30 tokens x 20 ms: the first chunk must come long before the end.
    assert first_at < total / 2


def test_disconnect_cancels_the_run_and_stops_model_calls(tmp_path: Path, fake_llm: FakeLLMProcess) -> None:
    env = {"LLM_BASE_URL": fake_llm.base_url, "LLM_MODEL": "fake-llm", "LLM_API_KEY": "sk-fake"}
    with start_service(tmp_path, **env) as process:
        with httpx.stream(
            "POST",
            f"{process.base_url}/v1/chat/completions",
            json={"model": "demo-team", "messages": QUESTION, "stream": True},
            timeout=30,
        ) as response:
            seen = 0
            for line in response.iter_lines():
                if '"reasoning_content"' in line:
                    seen += 1
                if seen >= 5:
                    break  # the client goes away mid-answer of the first agent
        assert_upstream_stopped(fake_llm, gone_at=time.time())
        assert metric(process.base_url, "autogen_model_calls_total") == 1
        assert metric(process.base_url, "autogen_active_workflows") == 0
        assert metric(process.base_url, "autogen_active_streams") == 0
        cancelled = metric(
            process.base_url, "autogen_requests_total", model="demo-team", outcome="cancelled", stream="true"
        )
        assert cancelled == 1


def test_team_streams_through_openai_client_to_a_local_llm(tmp_path: Path) -> None:
    with (
        start_fake_llm_process(ttft_ms=5, token_ms=1, tokens=12, log_path=tmp_path / "fake.log") as llm,
        start_service(
            tmp_path,
            LLM_BASE_URL=llm.base_url,
            LLM_MODEL="fake-llm",
            LLM_API_KEY="sk-fake",
            MAX_AGENT_TURNS="3",
        ) as process,
    ):
        client = sdk(process.base_url)
        chunks = stream_with_usage(client, "demo-team")
        names = [
            (chunk.choices[0].delta.model_extra or {}).get("name")
            for chunk in chunks
            if chunk.choices and (reasoning_of(chunk) or chunk.choices[0].delta.content)
        ]
        assert list(dict.fromkeys(names)) == ["planner", "writer", "reviewer"]
        assert len(names) > 3 * 5  # token by token, not one message at a time
        answer = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert answer and "TERMINATE" not in answer  # the reviewer's text, streamed as it was written
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens == 3 * 12  # reported by the upstream LLM
        assert chunks[-2].choices[0].finish_reason == "length"  # stopped by MAX_AGENT_TURNS
        assert llm.stats()["requests"] == 3 and llm.stats()["streaming_requests"] == 3
        completion = client.chat.completions.create(model="echo", messages=QUESTION)  # type: ignore[arg-type]
        assert completion.choices[0].message.content
        assert llm.stats()["requests"] == 4


def test_upstream_failure_is_a_clean_502(tmp_path: Path) -> None:
    with (
        start_fake_llm_process(error_rate=1.0, error_kind="http", log_path=tmp_path / "fake.log") as llm,
        start_service(
            tmp_path, LLM_BASE_URL=llm.base_url, LLM_MODEL="fake-llm", LLM_API_KEY="sk-fake"
        ) as process,
    ):
        client = sdk(process.base_url)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="echo", messages=QUESTION)  # type: ignore[arg-type]
        assert caught.value.status_code == 502
        assert "fake" not in str(caught.value.body) and "127.0.0.1" not in str(caught.value.body)
        # The stream's status waits for its first event: a failure before it is a real 502 too.
        with pytest.raises(openai.APIStatusError) as streamed:
            client.chat.completions.create(model="echo", messages=QUESTION, stream=True)  # type: ignore[arg-type]
        assert streamed.value.status_code == 502 and "upstream model" in str(streamed.value)


def test_non_streaming_disconnect_stops_model_calls(tmp_path: Path, fake_llm: FakeLLMProcess) -> None:
    env = {"LLM_BASE_URL": fake_llm.base_url, "LLM_MODEL": "fake-llm", "LLM_API_KEY": "sk-fake"}
    with start_service(tmp_path, **env) as process:
        body = {"model": "demo-team", "messages": QUESTION}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{process.base_url}/v1/chat/completions", json=body, timeout=0.8)
        assert_upstream_stopped(fake_llm, gone_at=time.time())
        cancelled = metric(
            process.base_url, "autogen_requests_total", model="demo-team", outcome="cancelled", stream="false"
        )
        assert cancelled == 1
        assert metric(process.base_url, "autogen_active_workflows") == 0
