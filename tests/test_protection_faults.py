"""Deadlines and upstream faults against the real service: clean 504/502 in the OpenAI shape, an
error event once a stream has started, nothing left running, and no upstream detail (error
bodies, URLs with credentials) ever sent to a client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.fake_llm import FakeLLMProcess, start_fake_llm_process
from service.runs.errors import UpstreamModelError, UpstreamModelTimeout, failure_kind
from service.runs.events import FailureKind, RunEnded, RunEndReason
from service.serving.errors import run_failure
from tests.helpers.probes import metric, wait_until
from tests.helpers.server import ServiceProcess, free_port, start_service

QUESTION = [{"role": "user", "content": "What is AutoGen?"}]
UPSTREAM_TEXT = ("injected fake-llm", "fake_error", "127.0.0.1")


def _complete(service: ServiceProcess, model: str = "echo") -> httpx.Response:
    return httpx.post(
        f"{service.base_url}/v1/chat/completions", json={"model": model, "messages": QUESTION}, timeout=60
    )


def _stream_events(service: ServiceProcess, model: str = "echo") -> tuple[int, list[str]]:
    body = {"model": model, "messages": QUESTION, "stream": True}
    with httpx.stream("POST", f"{service.base_url}/v1/chat/completions", json=body, timeout=60) as response:
        return response.status_code, [line for line in response.iter_lines() if line.startswith("data: ")]


def _stream_response(service: ServiceProcess, model: str = "echo") -> httpx.Response:
    """A streaming request whose answer is read whole (an error before the first byte is JSON)."""
    body = {"model": model, "messages": QUESTION, "stream": True}
    with httpx.stream("POST", f"{service.base_url}/v1/chat/completions", json=body, timeout=60) as response:
        response.read()
    return response


def _last_error(events: list[str]) -> dict[str, Any]:
    assert events and events[-1] != "data: [DONE]", events[-3:]
    error: dict[str, Any] = json.loads(events[-1].removeprefix("data: "))["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.fixture(scope="module")
def fake_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeLLMProcess]:
    log = tmp_path_factory.mktemp("fake-llm") / "fake.log"
    with start_fake_llm_process(ttft_ms=5, token_ms=1, tokens=8, log_path=log) as llm:
        yield llm


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLMProcess) -> Iterator[ServiceProcess]:
    with start_service(
        tmp_path_factory.mktemp("faults"),
        LLM_BASE_URL=fake_llm.base_url,
        LLM_MODEL="fake-llm",
        LLM_API_KEY="sk-upstream-secret",
        WORKFLOW_TIMEOUT_S="2",
    ) as process:
        yield process


def test_deadline_before_the_first_byte_is_a_504_and_after_it_an_error_event(
    service: ServiceProcess, fake_llm: FakeLLMProcess
) -> None:
    fake_llm.configure(error_rate=0.0, ttft_ms=30_000)  # the model never answers within WORKFLOW_TIMEOUT_S
    try:
        response = _complete(service)
        assert response.status_code == 504
        assert (
            response.json()["error"]["code"] == "timeout"
            and response.json()["error"]["type"] == "timeout_error"
        )
        # A stream's status waits for its first event: the deadline came first, so a real 504 too.
        streamed = _stream_response(service)
        assert streamed.status_code == 504 and streamed.json()["error"]["code"] == "timeout"
        assert wait_until(lambda: metric(service.base_url, "autogen_active_workflows") == 0, 10)
        assert wait_until(lambda: fake_llm.stats()["in_flight"] == 0, 10)  # the upstream calls were dropped
        assert metric(service.base_url, "autogen_requests_total", outcome="timeout") == 2
    finally:
        fake_llm.configure(ttft_ms=5)


@pytest.mark.parametrize(
    "model", ["echo", "demo-team"]
)  # one agent, and a team (errors re-raised by AgentChat)
@pytest.mark.parametrize("kind", ["http", "stream"])
def test_upstream_errors_are_502_without_upstream_details(
    service: ServiceProcess, fake_llm: FakeLLMProcess, kind: str, model: str
) -> None:
    fake_llm.configure(error_rate=1.0, error_kind=kind)  # "http": a 500; "stream": an error mid-stream
    try:
        texts = []
        if kind == "http":
            response = _complete(service, model)
            assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
            texts.append(response.text)
        if kind == "http":  # before the first byte: the stream gets the real status
            streamed = _stream_response(service, model)
            assert streamed.status_code == 502 and streamed.json()["error"]["code"] == "upstream_error"
            events = [streamed.text]
        else:  # after some tokens: an error event ends the stream
            status, events = _stream_events(service, model)
            assert status == 200 and _last_error(events)["code"] == "upstream_error"
        for text in (*texts, *events):
            assert not any(detail in text for detail in UPSTREAM_TEXT), text
            assert "sk-upstream-secret" not in text and "Traceback" not in text
    finally:
        fake_llm.configure(error_rate=0.0)
    assert _complete(service, model).status_code == 200  # healthy again once the upstream is


def test_an_llm_url_with_credentials_never_reaches_a_client(tmp_path: Path) -> None:
    secret_url = f"http://svc-user:pa55w0rd-in-url@127.0.0.1:{free_port()}/v1"  # nothing listens there
    with start_service(
        tmp_path, LLM_BASE_URL=secret_url, LLM_MODEL="m", LLM_API_KEY="sk-also-secret"
    ) as service:
        response = _complete(service)
        assert response.status_code == 502
        streamed = _stream_response(service)
        assert streamed.status_code == 502 and streamed.json()["error"]["code"] == "upstream_error"
        events = [streamed.text]
        logs = service.logs()
    for text in (response.text, *events, logs):
        assert "pa55w0rd-in-url" not in text and "sk-also-secret" not in text


def test_embedded_model_deadline(tmp_path: Path) -> None:
    # The team needs about 3 s (~80 tokens at 40 ms), three times the deadline.
    with start_service(tmp_path, WORKFLOW_TIMEOUT_S="1", DEMO_LLM_TOKEN_MS="40") as service:
        response = _complete(service, "demo-team")
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        status, events = _stream_events(service, "demo-team")
        assert status == 200 and len(events) > 1 and _last_error(events)["code"] == "timeout"
        assert wait_until(lambda: metric(service.base_url, "autogen_active_workflows") == 0, 10)
        assert metric(service.base_url, "autogen_active_streams") == 0


def test_upstream_failures_are_classified_even_through_agentchat_runtime_errors() -> None:
    assert failure_kind(UpstreamModelTimeout("APITimeoutError")) is FailureKind.UPSTREAM_TIMEOUT
    assert failure_kind(UpstreamModelError("APIStatusError")) is FailureKind.UPSTREAM_ERROR
    # A team re-raises an agent's error as RuntimeError("<TypeName>: <message>\nTraceback: ...").
    team = RuntimeError("UpstreamModelError: InternalServerError: secret body\nTraceback: ...")
    assert failure_kind(team) is FailureKind.UPSTREAM_ERROR
    assert failure_kind(RuntimeError("UpstreamModelTimeout: APITimeoutError")) is FailureKind.UPSTREAM_TIMEOUT
    assert failure_kind(RuntimeError("ValueError: a bug of ours")) is FailureKind.INTERNAL
    assert failure_kind(ValueError("UpstreamModelError: not from the upstream")) is FailureKind.INTERNAL
    failure = run_failure(RunEnded(RunEndReason.FAILED, failure=FailureKind.UPSTREAM_ERROR))
    assert failure is not None and failure[0].status_code == 502 and "secret" not in failure[0].message
    timeout = run_failure(RunEnded(RunEndReason.FAILED, failure=FailureKind.UPSTREAM_TIMEOUT))
    assert timeout is not None and timeout[0].status_code == 504
