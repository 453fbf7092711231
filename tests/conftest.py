"""Shared fixtures (the real app over httpx's ASGI transport, the official `openai` SDK client) and
the test run's set-up: automatic markers, the order of modules, a data dir per test worker."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from service.app import create_app
from tests.helpers.app import make_settings, running_app
from tests.helpers.markers import Scanner, followed, markers_for
from tests.helpers.redis_server import requires_redis
from tests.helpers.xdist_groups import GroupScheduling, publish, start

__all__ = ["make_settings", "running_app"]  # tests once imported them from here


def pytest_configure(config: pytest.Config) -> None:
    start(config)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> GroupScheduling | None:
    """`--dist loadgroup` with groups that pytest 9.2 keeps (tests/helpers/xdist_groups.py)."""
    return GroupScheduling(config, log) if config.getoption("dist", default=None) == "loadgroup" else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by what it starts (tests/helpers/markers.py); keep a module's tests that
    share a server-starting fixture on one xdist worker (`xdist_group`, for `--dist loadgroup`);
    and order the run for `--no-loadscope-reorder`: slow tests first (each then starts on a
    worker of its own instead of finishing last), then modules with a shared server (the largest
    first), then other process tests, then in-process tests. A module's other tests stay together
    and in their order, so a module fixture starts once per worker."""
    scanner = Scanner()
    for item in items:
        if isinstance(item, pytest.Function):
            _mark(item, scanner)
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(_module(item), []).append(item)
    rank = {module: min(_rank(item) for item in members) for module, members in modules.items()}
    position = {module: index for index, module in enumerate(modules)}

    def key(item: pytest.Item) -> tuple[int, int, int, int]:
        module = _module(item)
        slow = item.get_closest_marker("slow") is not None
        size = len(modules[module]) if rank[module] == 1 else 0
        return (0 if slow else 1, rank[module], -size, position[module])

    items.sort(key=key)  # stable: the order within a module is kept
    publish(config, items)


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def _mark(item: pytest.Function, scanner: Scanner) -> None:
    names = scanner.names(item.function)
    shared = False  # a fixture wider than the test starts something: its tests share a worker
    for definitions in item._fixtureinfo.name2fixturedefs.values():
        fixture = definitions[-1]
        if followed(fixture.func):
            fixture_names = scanner.names(fixture.func)
            names |= fixture_names
            shared |= fixture.scope != "function" and bool(markers_for(fixture_names))
    marks = markers_for(names)
    if any(mark == requires_redis.mark for mark in item.iter_markers("skipif")):
        marks |= {"redis", "process"}
    for marker in sorted(marks):
        item.add_marker(marker)
    if shared:
        item.add_marker(pytest.mark.xdist_group(_module(item)))


def _rank(item: pytest.Item) -> int:
    if item.get_closest_marker("slow"):
        return 0
    if item.get_closest_marker("xdist_group"):
        return 1
    return 2 if item.get_closest_marker("process") else 3


@pytest.fixture(scope="session", autouse=True)
def _worker_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`DATA_DIR` (the embedded SQLite state store) of this test worker: in-process apps and
    services started with the worker's environment never share a file with another worker."""
    previous = os.environ.get("DATA_DIR")
    os.environ["DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    yield
    if previous is None:
        os.environ.pop("DATA_DIR", None)
    else:
        os.environ["DATA_DIR"] = previous


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(make_settings())) as http:
        yield http


@pytest.fixture
async def sdk(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
