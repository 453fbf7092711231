"""Metrics, traces and logs of the running service, checked with real tools.

- gunicorn with 2 workers: `/metrics` sums both workers; a forced 500 raises autogen_errors_total;
- the real `promtool check metrics` on the live exposition;
- a real Prometheus server scrapes the service and answers a query;
- every metric named by a dashboard or rule is exposed by the service;
- the span tree of one streaming demo-team request (in-memory exporter), no span per SSE chunk;
- JSON logs with trace ids, no prompt text, no log injection.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.app import create_app
from service.observability.logging import ContextFilter, ServiceJsonFormatter
from tests.helpers.app import make_settings, running_app
from tests.helpers.observability import exposed_metric_names, metric_names_used_in_assets, running_prometheus
from tests.helpers.probes import send_until_workers_served
from tests.helpers.server import ServiceProcess, start_service

BUILTIN = Path(__file__).resolve().parents[1] / "service" / "workflows" / "builtin"
PROMPT = "Please repeat this sentence back to me word for word so that the stream takes a little while"
SECRET = "SECRET-PROMPT-TEXT-4711"


def echo_variant(**model_config: Any) -> str:
    document = json.loads((BUILTIN / "echo.json").read_text())
    document["config"]["model_client"]["config"].update(model_config)
    return json.dumps(document)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp_path = tmp_path_factory.mktemp("metrics")
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "faulty.json").write_text(echo_variant(fail_after_tokens=0))
    (workflows / "faulty-stream.json").write_text(echo_variant(fail_after_tokens=3))
    (workflows / "slow.json").write_text(echo_variant(ttft_ms=1500))
    with start_service(
        tmp_path,
        WORKERS="2",
        WORKFLOWS_DIR=str(workflows),
        DEMO_LLM_TOKEN_MS="5",
        MAX_CONCURRENT_WORKFLOWS="8",
    ) as process:
        process.metrics_dir = tmp_path / "prometheus"  # type: ignore[attr-defined]
        yield process


def scrape(base_url: str) -> str:
    response = httpx.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def sample(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(key) == value for key, value in labels.items()):
                total += item.value
    return total


async def drive(base_url: str, count: int, concurrency: int, model: str = "echo") -> list[int]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def one() -> int:
            async with gate:
                body = {"model": model, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    async for _ in response.aiter_lines():
                        pass
                    return response.status_code

        return await asyncio.gather(*(one() for _ in range(count)))


def test_metrics_sum_across_two_workers(two_workers: ServiceProcess) -> None:
    statuses = send_until_workers_served(
        lambda: asyncio.run(drive(two_workers.base_url, count=48, concurrency=8)),
        two_workers.metrics_dir,  # type: ignore[attr-defined]
        workers=2,
    )
    sent = len(statuses)
    assert statuses == [200] * sent
    for _ in range(6):  # whichever worker answers the scrape, the total is the sum of both
        text = scrape(two_workers.base_url)
        assert sample(text, "autogen_requests_total", model="echo", outcome="ok", stream="true") == sent
    assert sample(text, "autogen_active_streams") == 0 and sample(text, "autogen_active_workflows") == 0
    assert sample(text, "autogen_time_to_first_token_seconds_count", model="echo") == sent
    # The instance's capacity, as the saturation alert reads it: MAX_CONCURRENT_WORKFLOWS x 2 workers.
    assert sample(text, "autogen_workflow_capacity") == 16


def test_forced_500_paths_increase_the_error_counter(two_workers: ServiceProcess) -> None:
    before = sample(scrape(two_workers.base_url), "autogen_errors_total", function="serve_autogen")
    body = {"model": "faulty", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{two_workers.base_url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error" and "injected" not in response.text
    streamed = httpx.post(
        f"{two_workers.base_url}/v1/chat/completions",
        json={
            **body,
            "model": "faulty-stream",
            "stream": True,
            "messages": [{"role": "user", "content": PROMPT}],
        },
        timeout=30,
    )
    events = [line for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert '"content"' in streamed.text and "[DONE]" not in streamed.text
    assert json.loads(events[-1][6:])["error"]["type"] == "server_error"
    text = scrape(two_workers.base_url)
    assert sample(text, "autogen_errors_total", function="serve_autogen") == before + 2
    assert sample(text, "autogen_requests_total", model="faulty", outcome="server_error") == 1


def test_overload_rejections_are_counted(two_workers: ServiceProcess) -> None:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=two_workers.base_url, timeout=30) as client:
            body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
            responses = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(24))
            )
            return [response.status_code for response in responses]

    statuses = Counter(asyncio.run(burst()))
    assert statuses[200] <= 16 and statuses[503] >= 8 and set(statuses) <= {200, 503}
    assert sample(scrape(two_workers.base_url), "autogen_rejected_total", reason="overload") == statuses[503]


def test_promtool_accepts_the_live_exposition(two_workers: ServiceProcess) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing: `make test` installs the Debian package prometheus")
    asyncio.run(drive(two_workers.base_url, count=2, concurrency=2))
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrape(two_workers.base_url),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


def test_dashboards_and_rules_only_use_exposed_metrics(two_workers: ServiceProcess) -> None:
    asyncio.run(drive(two_workers.base_url, count=2, concurrency=2))
    exposed = exposed_metric_names(scrape(two_workers.base_url))
    missing = metric_names_used_in_assets() - exposed
    assert not missing, f"dashboards/rules use metrics the service does not expose: {sorted(missing)}"


def test_real_prometheus_scrapes_the_service(two_workers: ServiceProcess, tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus missing: `make test` installs the Debian package prometheus")
    asyncio.run(drive(two_workers.base_url, count=4, concurrency=2))
    expected = sample(scrape(two_workers.base_url), "autogen_requests_total", model="echo", outcome="ok")
    with running_prometheus(f"127.0.0.1:{two_workers.port}", tmp_path) as prometheus:
        from tests.helpers.observability import wait_for_query

        result = wait_for_query(
            prometheus,
            'sum(autogen_requests_total{model="echo",outcome="ok"})',
            predicate=lambda rows: bool(rows) and float(rows[0]["value"][1]) >= expected,
            timeout=30,
        )
    assert float(result[0]["value"][1]) == expected


def test_logs_are_json_without_prompts_or_injection(two_workers: ServiceProcess) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": SECRET}]}
    assert httpx.post(f"{two_workers.base_url}/v1/chat/completions", json=body, timeout=30).status_code == 200
    httpx.get(f"{two_workers.base_url}/v1/models/evil%0D%0Aforged%20line%1B%5B31m", timeout=10)
    httpx.post(f"{two_workers.base_url}/v1/chat/completions", json={**body, "model": "faulty"}, timeout=30)
    lines = [line for line in two_workers.logs().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records and all(
        {"timestamp", "level", "message", "logger", "trace_id", "span_id"} <= set(r) for r in records
    )
    assert SECRET not in two_workers.logs()
    assert not any(line.startswith("forged") for line in two_workers.logs().splitlines())
    assert "\x1b" not in two_workers.logs()
    failure = next(r for r in records if r["message"] == "workflow failed")
    assert failure["level"] == "ERROR" and failure["model"] == "faulty" and failure["request_id"]


def test_log_records_carry_the_trace_and_sanitize_user_text() -> None:
    provider = TracerProvider()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ServiceJsonFormatter())
    handler.addFilter(ContextFilter())
    log = logging.getLogger("test.trace")
    log.addHandler(handler)
    log.propagate = False
    with provider.get_tracer("t").start_as_current_span("work") as span:
        log.warning("model refused", extra={"model": "bad\r\nmodel\x1b[31m"})
    record = json.loads(stream.getvalue())
    assert record["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert record["model"] == "bad??model?[31m" and "\n" not in stream.getvalue().strip()


# --- traces -----------------------------------------------------------------------------------------
def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_of(span: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> ReadableSpan | None:
    return next((s for s in spans if span.parent and s.context.span_id == span.parent.span_id), None)


async def test_span_tree_of_a_streaming_team_request() -> None:
    exporter = InMemorySpanExporter()
    app = create_app(make_settings(), span_processor=SimpleSpanProcessor(exporter))
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with running_app(app) as http:
        body = {"model": "demo-team", "stream": True, "messages": [{"role": "user", "content": "Q"}]}
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"traceparent": traceparent}
        ) as response:
            chunks = [line async for line in response.aiter_lines() if line.startswith("data: ")]
            trace_header = response.headers["x-trace-id"]
    spans = exporter.get_finished_spans()
    assert trace_header == "0af7651916cd43dd8448eb211c80319c"
    assert {format(span.context.trace_id, "032x") for span in spans} == {trace_header}  # honoured traceparent
    assert len(chunks) > 60 and len(spans) < 20  # no span per SSE chunk
    assert not [span for span in spans if "http send" in span.name or "http receive" in span.name]
    (server,) = [span for span in spans if span.kind == trace.SpanKind.SERVER]
    (serve,) = by_name(spans, "serve_autogen")
    (generate,) = by_name(spans, "generate_streaming_response")
    (workflow,) = by_name(spans, "invoke_workflow")
    assert parent_of(serve, spans) is server and parent_of(generate, spans) is server
    assert parent_of(workflow, spans) is serve
    assert (
        workflow.attributes is not None and workflow.attributes["gen_ai.operation.name"] == "invoke_workflow"
    )
    assert workflow.attributes["gen_ai.request.model"] == "demo-team"
    agents = [span for span in spans if span.name.startswith("invoke_agent")]
    assert [span.attributes["gen_ai.agent.name"] for span in agents if span.attributes] == [
        "planner",
        "writer",
        "reviewer",
    ]
    assert all(parent_of(span, spans) is workflow for span in agents)
    calls = [span for span in spans if span.name.startswith("chat ")]
    assert len(calls) == 3
    for call in calls:
        agent = parent_of(call, spans)
        assert agent is not None and agent in agents and call.attributes is not None
        assert call.attributes["gen_ai.operation.name"] == "chat"
        assert call.attributes["gen_ai.request.model"].startswith("embedded-")
        assert (
            call.attributes["gen_ai.usage.input_tokens"] > 0
            and call.attributes["gen_ai.usage.output_tokens"] > 0
        )
        assert call.attributes["gen_ai.agent.name"] == agent.attributes["gen_ai.agent.name"]  # type: ignore[index]
    assert not by_name(spans, "handle_response")  # per-chunk serialization adds no spans


async def test_non_streaming_spans_and_error_status() -> None:
    exporter = InMemorySpanExporter()
    app = create_app(make_settings(), span_processor=SimpleSpanProcessor(exporter))
    async with running_app(app) as http:
        body = {"model": "echo", "messages": [{"role": "user", "content": "Q"}]}
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        names = {span.name for span in exporter.get_finished_spans()}
        assert {
            "serve_autogen",
            "invoke_workflow",
            "create_non_streaming_response",
            "handle_response",
        } <= names
        exporter.clear()
        missing = await http.post("/v1/chat/completions", json={**body, "model": "missing"})
        assert missing.status_code == 404
    (serve,) = by_name(exporter.get_finished_spans(), "serve_autogen")
    assert serve.status.status_code == trace.StatusCode.ERROR and serve.events[0].name == "exception"


async def test_prompts_are_logged_only_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": SECRET}]}
    for log_prompts in (False, True):
        caplog.clear()
        async with running_app(create_app(make_settings(log_prompts=log_prompts))) as http:
            with caplog.at_level(logging.INFO, logger="service.autogen_server"):
                assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        logged = " ".join(str(record.__dict__) for record in caplog.records)
        assert (SECRET in logged) is log_prompts
