"""The folder layout is the architecture: dependencies point one way, from the HTTP routes at the top
down to the wire contract at the bottom. Every import of every module of the service is checked."""

from __future__ import annotations

import ast
from pathlib import Path

from service.contract.protocols import API_NAMES
from tests.helpers.server import REPO_ROOT

SERVICE = REPO_ROOT / "service"

# What each part may import from the service (besides itself). Run events know no wire format; the
# wire contract knows nothing of the service; only the HTTP layer and the app know FastAPI's routes.
ALLOWED: dict[str, set[str]] = {
    "app_state": set(),  # the one typed accessor to what a worker keeps on its app
    "contract": set(),
    "config": {"contract"},
    "lifecycle": set(),
    "gc_tuning": {"config"},
    "observability": {"contract", "config"},
    "protection": {"contract", "config", "observability", "lifecycle"},
    "runs": {"observability"},
    "workflows": {"runs", "observability", "config"},
    "encoders": {"contract", "runs"},
    "state": {"config", "observability"},
    "serving": {
        "contract",
        "config",
        "observability",
        "protection",
        "runs",
        "workflows",
        "encoders",
        "state",
    },
    "autogen_server": {"contract", "config", "observability", "runs", "serving", "encoders", "workflows"},
    "api": {
        "contract",
        "config",
        "lifecycle",
        "observability",
        "protection",
        "runs",
        "workflows",
        "encoders",
        "serving",
        "autogen_server",
        "state",
    },
}
# Every part may reach the app's state through its one typed accessor.
for allowed in ALLOWED.values():
    allowed.add("app_state")
# Entry points and the app factory may import anything.
TOP = {"app", "cli", "gunicorn_conf", "__main__", "__init__"}


def part_of(path: Path) -> str:
    relative = path.relative_to(SERVICE)
    return relative.parts[0].removesuffix(".py")


def imported_parts(path: Path) -> set[str]:
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            pieces = name.split(".")
            if pieces[0] == "service" and len(pieces) > 1:
                parts.add(pieces[1])
    return parts


def test_every_module_imports_only_what_its_layer_may() -> None:
    violations = []
    modules = sorted(SERVICE.rglob("*.py"))
    assert len(modules) > 40
    for path in modules:
        part = part_of(path)
        if part in TOP:
            continue
        assert part in ALLOWED, f"{path}: a new part of the service; give it a place in ALLOWED"
        for imported in imported_parts(path) - {part}:
            if imported not in ALLOWED[part]:
                violations.append(f"{path.relative_to(REPO_ROOT)} imports service.{imported}")
    assert not violations, "\n".join(violations)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    planted = tmp_path / "bad.py"
    planted.write_text("from service.api.routes import chat\nimport service.runs.events\n")
    assert imported_parts(planted) == {"api", "runs"}


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_routes_import_no_other_route_module() -> None:
    """Shared guards and dependencies live in `service/api/deps.py`, not in a route module."""
    routes = SERVICE / "api" / "routes"
    for path in sorted(routes.glob("*.py")):
        others = {
            f"service.api.routes.{other.stem}" for other in routes.glob("*.py") if other.stem != path.stem
        }
        assert not _imported_modules(path) & others, f"{path.name} imports another route module"


def test_an_encoder_imports_no_other_protocols_encoder() -> None:
    """What encoders share (the activity modes, the no-answer text) sits in a neutral module."""
    encoders = SERVICE / "encoders"
    protocol_encoders = set(API_NAMES)  # one encoder module per protocol, named after it
    for path in sorted(encoders.glob("*.py")):
        others = {f"service.encoders.{name}" for name in protocol_encoders - {path.stem}}
        assert not _imported_modules(path) & others, f"{path.name} imports another protocol's encoder"
