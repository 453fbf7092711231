"""The state-cost benchmark (`loadtests/state_cost.py`) runs, bounded, and reports what it measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import state_cost
from tests.helpers.redis_server import REDIS_SERVER


def test_a_tiny_run_reports_growing_states_for_each_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cost.json"
    state_cost.main(["--turns", "2", "--repeat", "2", "--json", str(out)])
    results = json.loads(out.read_text())
    stores = ["sqlite"] + (["redis"] if REDIS_SERVER is not None else [])
    for store in stores:
        rows = results[store]
        assert [row["turn"] for row in rows] == [1, 2]
        assert 0 < rows[0]["state_json_bytes"] < rows[1]["state_json_bytes"]  # the team remembers more
        assert all(0 < row["stored_bytes"] < row["state_json_bytes"] for row in rows)  # compressed
        assert all(row["save_ms"]["median"] > 0 and row["load_ms"]["median"] > 0 for row in rows)
    printed = capsys.readouterr().out
    assert "### demo-team, sqlite" in printed and "| turn |" in printed
