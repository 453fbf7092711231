"""`--dist loadgroup` that works with pytest 9.2: the tests of one `xdist_group` on one worker.

pytest-xdist 3.8 (the newest release) groups tests by a suffix it writes into `item._nodeid` on
the workers; pytest 9.2 builds `item.nodeid` from another attribute, so the suffix never reaches
the scheduler and every group is silently split across workers (each worker then starts the
module's server again). Here the workers publish each grouped test's group in a file named by the
controller (an environment variable the workers inherit), and the controller's scheduler (xdist's
own LoadScope scheduler, which sends a scope to one worker) reads its scopes from that file.
Tests without a group are scopes of their own, as in xdist's loadgroup.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

GROUPS_FILE = "AUTOGEN_TESTS_XDIST_GROUPS"


def start(config: pytest.Config) -> None:
    """On the controller of a `--dist loadgroup` run: name the file the workers write."""
    if hasattr(config, "workerinput") or config.getoption("dist", default=None) != "loadgroup":
        return
    handle, path = tempfile.mkstemp(prefix="xdist-groups-", suffix=".json")
    os.close(handle)
    os.environ[GROUPS_FILE] = path
    config.add_cleanup(lambda: Path(path).unlink(missing_ok=True))


def publish(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a worker: write {nodeid: group} of the collected tests (every worker writes the same)."""
    path = os.environ.get(GROUPS_FILE)
    if not path or not hasattr(config, "workerinput"):
        return
    groups = {}
    for item in items:
        names = {str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                 for mark in item.iter_markers("xdist_group")}  # fmt: skip
        if names:
            groups[item.nodeid] = "_".join(sorted(names))
    partial = Path(f"{path}.{config.workerinput['workerid']}")
    partial.write_text(json.dumps(groups), encoding="utf-8")
    partial.replace(path)


class GroupScheduling(LoadScopeScheduling):
    """xdist's LoadScope scheduling with the scopes the workers published."""

    _groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:
            path = os.environ.get(GROUPS_FILE, "")
            text = Path(path).read_text(encoding="utf-8") if path else ""
            self._groups = json.loads(text) if text else {}
        return self._groups.get(nodeid, nodeid)
