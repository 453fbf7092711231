"""The LLM behind the teams, seen from the service: streams closed when a run is cancelled, failures
before the first byte with their real status, bounded and malformed upstream streams.

A real server (gunicorn, one worker) in front of the scripted fake LLM in its own process; the fake
counts the streaming responses it still has open (`open_streams`).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from loadtests.scripted_llm import Fault, Reply, ScriptedLLMProcess, rule, start_scripted_llm_process
from tests.helpers.probes import metric
from tests.helpers.server import ServiceProcess, start_service

QUESTION = [{"role": "user", "content": "Tell me a long story."}]
LONG_STORY = " ".join(f"word{index}" for index in range(3000))
VERY_LONG_STORY = " ".join(f"token-number-{index}" for index in range(20_000))
ROUNDS = 20


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedLLMProcess]:
    with start_scripted_llm_process(log_path=tmp_path_factory.mktemp("llm") / "scripted.log") as process:
        yield process


def llm_env(llm: ScriptedLLMProcess, **extra: str) -> dict[str, str]:
    return {"LLM_BASE_URL": llm.base_url, "LLM_MODEL": "scripted", "LLM_API_KEY": "sk-test", **extra}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLMProcess) -> Iterator[ServiceProcess]:
    # A small queue: a client that does not read fills it at once (the run then waits on it).
    env = llm_env(llm, STREAM_QUEUE_SIZE="8", WORKFLOW_TIMEOUT_S="4")
    with start_service(tmp_path_factory.mktemp("service"), **env) as process:
        yield process


def open_upstream(llm: ScriptedLLMProcess) -> int:
    return int(llm.stats()["open_streams"])


def closed_within(llm: ScriptedLLMProcess, seconds: float) -> bool:
    return llm.wait_stats(lambda stats: stats["open_streams"] == 0, timeout=seconds)["open_streams"] == 0


def slow_story(llm: ScriptedLLMProcess) -> None:
    llm.reset()
    llm.load_script([rule(Reply(text=LONG_STORY, token_ms=5), times=None)])


def test_clients_that_leave_mid_stream_close_the_upstream_streams(
    service: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    slow_story(llm)
    body = {"model": "echo", "messages": QUESTION, "stream": True}
    for _ in range(ROUNDS):
        with httpx.stream(
            "POST", f"{service.base_url}/v1/chat/completions", json=body, timeout=30
        ) as response:
            for index, _line in enumerate(response.iter_lines()):
                if index > 6:
                    break  # the client leaves while the model is still writing
    assert closed_within(llm, 2.0), llm.stats()
    assert llm.stats()["cancelled"] == ROUNDS


def raw_stream_request(base_url: str, body: dict[str, object]) -> socket.socket:
    """A client that sends a streaming request and then never reads a byte of the answer."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    sock.sendall(head + payload)
    return sock


def test_clients_that_never_read_do_not_hold_upstream_streams_past_the_deadline(
    service: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    llm.reset()
    # 20,000 tokens at 2 ms: 40 s of writing, megabytes more than the sockets' buffers hold, and
    # longer than the wait below: only the deadline can end these streams in time (at 0.5 ms a
    # loaded machine's late deadline could let a stream finish, and the fake took all the CPU).
    llm.load_script([rule(Reply(text=VERY_LONG_STORY, token_ms=2), times=None)])
    body = {"model": "echo", "messages": QUESTION, "stream": True}
    sockets = [raw_stream_request(service.base_url, body) for _ in range(ROUNDS)]
    try:
        started = llm.wait_stats(lambda stats: stats["streaming_requests"] >= ROUNDS, timeout=30)
        assert started["streaming_requests"] == ROUNDS, started
        # Their queues are full, their runs wait; then WORKFLOW_TIMEOUT_S (4 s) ends every run.
        # Without the deadline they would wait as long as the clients stay: the margin past 4 s
        # is for a loaded machine, where the fake's writing and the service's closing are slow.
        assert closed_within(llm, 4.0 + 26.0), llm.stats()
    finally:
        for sock in sockets:
            sock.close()
    assert llm.stats()["completed"] == 0  # every one was cut at the deadline, none written to the end


def test_the_deadline_closes_a_hanging_upstream_stream(
    service: ServiceProcess, llm: ScriptedLLMProcess
) -> None:
    llm.reset()
    llm.load_script([rule(Reply(text="Once upon a time", fault=Fault(kind="hang", after=2)), times=None)])
    client = openai.OpenAI(base_url=f"{service.base_url}/v1", api_key="unused", max_retries=0, timeout=30)
    for _ in range(3):
        stream = client.chat.completions.create(model="echo", messages=QUESTION, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError, match="did not finish in time"):
            list(stream)
    assert closed_within(llm, 2.0), llm.stats()


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Fault(kind="http", status=500), 502),
        (Fault(kind="http", status=429, headers={"retry-after": "0"}), 502),
        (Fault(kind="drop"), 502),
        (Fault(kind="garbage", lines=["data: {not json", "data: [broken"], after=0), 502),
        (Fault(kind="huge", bytes=10_000_000, after=0), 502),
    ],
    ids=["http-500", "http-429", "dropped", "garbage-sse", "10-mb-chunk"],
)
def test_an_upstream_failure_before_the_first_byte_gets_its_real_status(
    service: ServiceProcess, llm: ScriptedLLMProcess, fault: Fault, status: int
) -> None:
    llm.reset()
    llm.load_script([rule(Reply(text="Never seen.", fault=fault), times=None)])
    client = openai.OpenAI(base_url=f"{service.base_url}/v1", api_key="unused", max_retries=0, timeout=30)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as caught:
            response = client.chat.completions.create(model="echo", messages=QUESTION, stream=stream)  # type: ignore[arg-type, call-overload]
            if stream:
                list(response)
        assert caught.value.status_code == status
        assert "upstream model" in caught.value.message and "127.0.0.1" not in str(caught.value.body)
    assert metric(service.base_url, "autogen_errors_total", function="serve_autogen") == 0
    assert closed_within(llm, 2.0)


def test_an_upstream_that_does_not_answer_in_time_is_a_504(tmp_path: Path, llm: ScriptedLLMProcess) -> None:
    llm.reset()
    llm.load_script([rule(Reply(text="late", ttft_ms=5000), times=None)])
    # The model client's own timeout (the service gives it WORKFLOW_TIMEOUT_S) comes first here.
    with start_service(tmp_path, **llm_env(llm, WORKFLOW_TIMEOUT_S="1")) as process:
        client = openai.OpenAI(base_url=f"{process.base_url}/v1", api_key="unused", max_retries=0, timeout=30)
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="echo", messages=QUESTION, stream=stream)  # type: ignore[call-overload]
            assert caught.value.status_code == 504
    assert closed_within(llm, 2.0)
