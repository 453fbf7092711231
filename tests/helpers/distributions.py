"""What a Python environment (a venv, the image's /opt/venv) holds, against what serving needs
and against requirements.lock.

`PROBE` runs in the environment's own interpreter (standard library only) and prints its
distributions with their requirements and its marker environment; `runtime_closure` follows the
requirements of `autogen-service` from there. Nothing is listed by hand: when pyproject.toml gains
a runtime dependency, the closure gains it too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "autogen-service"
# What `python -m venv` and `make serve`'s pip upgrade put there, which no requirement names.
INSTALLERS = frozenset({"pip", "setuptools", "wheel"})
# Command-line tools of the dev extra, by the executables they install.
DEV_EXECUTABLES = (
    "pytest",
    "ruff",
    "mypy",
    "locust",
    "schemathesis",
    "st",
    "kubectl",
    "hadolint",
    "kubernetes-validate",
    "yamllint",
    "py-spy",
    "pyinstrument",
)

PROBE = r"""
import importlib.metadata as m, json, os, platform, sys
info = sys.implementation.version
version = f"{info.major}.{info.minor}.{info.micro}"
if info.releaselevel != "final":
    version += info.releaselevel[0] + str(info.serial)
environment = {
    "implementation_name": sys.implementation.name,
    "implementation_version": version,
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
distributions = {d.metadata["Name"]: d.requires or [] for d in m.distributions()}
versions = {d.metadata["Name"]: d.version for d in m.distributions()}
print(json.dumps({"environment": environment, "distributions": distributions, "versions": versions}))
"""


@dataclass(frozen=True)
class Environment:
    marker_environment: dict[str, str]
    distributions: dict[str, list[str]]  # canonical name -> requirement strings
    versions: dict[str, str]  # canonical name -> installed version

    @property
    def names(self) -> set[str]:
        return set(self.distributions)


def probe(command: Sequence[str], timeout: float = 120) -> Environment:
    """Run PROBE with `command` (e.g. [venv/bin/python, "-c"]) and read what it prints."""
    result = subprocess.run([*command, PROBE], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    distributions = {canonicalize_name(name): requires for name, requires in data["distributions"].items()}
    versions = {canonicalize_name(name): version for name, version in data["versions"].items()}
    return Environment(data["environment"], distributions, versions)


def this_environment() -> Environment:
    """The test venv: the interpreter running the tests."""
    return probe([sys.executable, "-c"])


def runtime_closure(env: Environment, root: str = PROJECT) -> tuple[set[str], set[str]]:
    """(distributions `root` needs, transitively, with no extra; those of them not installed)."""
    needed: set[str] = set()
    missing: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(canonicalize_name(root), frozenset())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        needed.add(name)
        if name not in env.distributions:
            missing.add(name)
            continue
        for text in env.distributions[name]:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({**env.marker_environment, "extra": extra})
                for extra in (extras or {""})
            ):
                continue
            todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return needed, missing


def dev_extra(pyproject: Path = REPO_ROOT / "pyproject.toml") -> set[str]:
    """The distributions the `dev` extra names."""
    project: Mapping[str, object] = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    return {canonicalize_name(Requirement(text).name) for text in extras["dev"]}


def assert_serving_only(env: Environment, where: str) -> None:
    """`env` holds exactly what serving needs: the runtime closure, its installers, no dev tool."""
    needed, missing = runtime_closure(env)
    assert not missing, f"{where}: required but not installed: {sorted(missing)}"
    dev_only = dev_extra() - needed
    assert not dev_only & env.names, f"{where}: dev-extra packages installed: {sorted(dev_only & env.names)}"
    extra = env.names - needed - INSTALLERS
    assert not extra, f"{where}: installed but not needed to serve: {sorted(extra)}"


LOCK = REPO_ROOT / "requirements.lock"


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    """requirements.lock's pins: canonical name -> version (uv's `name==version` lines)."""
    pins: dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"not a pin in {lock.name}: {line}"
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def assert_agree(environments: Mapping[str, Environment], complete: Sequence[str] = ()) -> None:
    """The environments and the lock agree: any two environments hold the same version of every
    distribution both hold, and that is the lock's version (pip, setuptools and wheel aside, which
    come with the venv). The environments named in `complete` hold nothing the lock does not pin
    (the project itself aside): what they install cannot float."""
    pins = locked_versions()
    ignored = INSTALLERS | {PROJECT}
    problems: list[str] = []
    for where, env in environments.items():
        for name, version in sorted(env.versions.items()):
            if name in ignored:
                continue
            if name not in pins:
                if where in complete:
                    problems.append(f"{where}: {name} {version} is not in {LOCK.name}")
            elif version != pins[name]:
                problems.append(f"{where}: {name} {version}, {LOCK.name} pins {pins[name]}")
    names = list(environments)
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            a, b = environments[first].versions, environments[second].versions
            for name in sorted((set(a) & set(b)) - ignored):
                if a[name] != b[name]:
                    problems.append(f"{name}: {a[name]} in {first}, {b[name]} in {second}")
    assert not problems, "\n".join(problems)
