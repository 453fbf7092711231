"""requirements.lock, the one constraints file of `make serve`, `make test` and the Dockerfile.

The fresh serve venv (tests/test_install.py) and the built image (tests/test_image.py, run by
`make image-test`) are checked against it and against this test venv in their own modules.
"""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import distributions


def test_the_lock_pins_what_pyproject_pins() -> None:
    """Every runtime and dev requirement of pyproject.toml is in the lock at pyproject's own pin:
    a pyproject.toml edited without `make lock` fails here."""
    project = tomllib.loads((distributions.REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]
    pins = distributions.locked_versions()
    stale = []
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in pins or pins[name] not in requirement.specifier:
            stale.append(f"{text} (lock: {pins.get(name, 'missing')})")
    assert not stale, f"requirements.lock is out of date (run `make lock`): {stale}"


def test_the_test_venv_has_the_locked_versions() -> None:
    distributions.assert_agree({"the test venv": distributions.this_environment()})
