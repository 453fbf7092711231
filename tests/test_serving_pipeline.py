"""The one serving pipeline: the capacity slot is free by the time a client has its last byte, and
the protocol registry drives everything that names an API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from loadtests import loadgen
from service.contract.protocols import API_NAMES, PROTOCOLS, protocol_of_path
from service.observability.metrics import ServiceMetrics
from tests.helpers.app import make_settings
from tests.helpers.probes import metric
from tests.helpers.server import start_service

CLIENTS = 64
LOAD_S = 8.0


def test_clients_that_reopen_a_stream_at_once_never_find_the_worker_full(tmp_path: Path) -> None:
    """64 clients, each opening a new demo-team stream as soon as its last one ended, against one
    worker that runs at most 64 workflows: never more than 64 streams are wanted at once, so none is
    refused. (Before the pipeline settled a request before its last bytes, 3-310 were: the slot was
    released after the client had its `[DONE]`.)"""
    with start_service(tmp_path, MAX_CONCURRENT_WORKFLOWS=str(CLIENTS), LOG_LEVEL="WARNING") as service:
        target = loadgen.Target(
            service.base_url, None, loadgen.build_body("demo-team", "What is AutoGen?", None, {})
        )
        result, _ = asyncio.run(loadgen.closed_loop(target, CLIENTS, LOAD_S, 120.0, None, None, 60.0))
        rejected = metric(service.base_url, "autogen_rejected_total", reason="overload")
    report = loadgen.report(result, LOAD_S, {})
    assert report["completed"] >= CLIENTS, report
    assert report["errors"] == {}, report
    assert rejected == 0


TURNS = 12


def test_the_next_turn_of_a_conversation_started_at_the_last_event_finds_it_free(tmp_path: Path) -> None:
    """A client that sends its next turn as soon as it has `response.completed` never gets 409
    `conversation_busy`: the turn's lock is released with the request's slot, before the last bytes."""
    with start_service(tmp_path, LOG_LEVEL="WARNING") as service:
        with httpx.Client(base_url=service.base_url, timeout=60) as client:
            conversation = client.post("/v1/conversations", json={}).json()["id"]
            statuses = []
            for turn in range(TURNS):
                body = {
                    "model": "echo",
                    "input": f"turn {turn}",
                    "conversation": conversation,
                    "stream": True,
                }
                with client.stream("POST", "/v1/responses", json=body) as response:
                    statuses.append(response.status_code)
                    if response.status_code != 200:
                        continue
                    for line in response.iter_lines():
                        if line.startswith("data:") and '"response.completed"' in line:
                            break  # the next turn goes out at once, before the stream's end
        items = client_items(service.base_url, conversation)
    assert statuses == [200] * TURNS
    assert items == 2 * TURNS  # each turn's input and answer


def client_items(base_url: str, conversation: str) -> int:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        page = client.get(f"/v1/conversations/{conversation}/items", params={"limit": 100}).json()
    return len(page["data"])


def test_api_names_are_the_registered_protocols() -> None:
    assert len(set(API_NAMES)) == len(PROTOCOLS) >= 2
    metrics = ServiceMetrics(known_models=["echo"])
    exposed = {
        sample.labels["api"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "autogen_requests_total"
    }
    assert exposed == set(API_NAMES)  # every protocol's label sets exist from the start


def test_every_rate_limited_api_path_belongs_to_a_registered_protocol() -> None:
    """Rate-limit accounting reads the registry: a limited API path outside every protocol's
    prefixes would be counted under the wrong API. (`/v1/models` is not rate limited.)"""
    from service.app import create_app

    paths = [path for path in create_app(make_settings()).openapi()["paths"] if path.startswith("/v1/")]
    limited = [path for path in paths if not path.startswith("/v1/models")]
    assert len(limited) >= 5
    for path in limited:
        assert protocol_of_path(path) is not None, path
    assert {protocol.name for path in limited if (protocol := protocol_of_path(path))} == set(API_NAMES)
