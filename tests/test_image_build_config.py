"""The image build's pip secrets and the layer scan of `make image-test`, checked without a container.

deploy/image/pip_build_config.py turns the host's pip settings into the `pip.conf` and
`pip-ca.pem` build secrets; the Dockerfile mounts them for its pip steps. tests/helpers/image.py
scans the image's layers for any trace of them.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers.image import REPO_ROOT, pip_build_config, scan_layer, sha256_of

gen = pip_build_config()

# `pip config list` on a build machine like these: local wheel folders and indexes, a CA bundle.
THIS_MACHINE = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.disable-pip-version-check='1'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
"""


def conf_options(text: str) -> dict[str, str]:
    return dict(
        line.split(" = ", 1) for line in text.splitlines() if " = " in line and not line.startswith("#")
    )


def test_local_indexes_and_files_stay_out_and_the_ca_is_mounted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    listing = THIS_MACHINE.replace("/etc/ssl/certs/ca-certificates.crt", str(ca))
    text, ca_path = gen.build_config(gen.parse_config_list(listing), {})
    assert text.splitlines()[1] == "[global]"
    assert conf_options(text) == {"timeout": "180", "cert": gen.CA_TARGET}
    assert ca_path == str(ca)


def test_a_private_index_proxy_and_trusted_host_are_carried() -> None:
    listing = """\
global.index-url='https://pypi.corp.example/simple'
global.extra-index-url='file:///srv/wheels https://mirror.corp.example/simple'
global.trusted-host='mirror.corp.example'
global.proxy='http://user:pass@proxy.corp.example:3128'
install.retries='7'
"""
    text, ca_path = gen.build_config(gen.parse_config_list(listing), {})
    assert conf_options(text) == {
        "index-url": "https://pypi.corp.example/simple",
        "extra-index-url": "https://mirror.corp.example/simple",
        "trusted-host": "mirror.corp.example",
        "proxy": "http://user:pass@proxy.corp.example:3128",
        "retries": "7",
    }
    assert ca_path is None


def test_environment_wins_over_files_and_proxy_variables_are_used() -> None:
    listing = """\
global.index-url='https://files.example/simple'
:env:.index-url='https://env.example/simple'
"""
    environ = {"HTTPS_PROXY": "http://proxy.example:8080", "HTTP_PROXY": "http://other.example:8080"}
    text, _ = gen.build_config(gen.parse_config_list(listing), environ)
    assert conf_options(text) == {
        "index-url": "https://env.example/simple",
        "proxy": "http://proxy.example:8080",
    }


def test_ca_bundle_from_the_environment_and_missing_files(tmp_path: Path) -> None:
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    text, ca_path = gen.build_config({}, {"REQUESTS_CA_BUNDLE": str(ca)})
    assert ca_path == str(ca) and conf_options(text)["cert"] == gen.CA_TARGET
    text, ca_path = gen.build_config({"cert": str(tmp_path / "absent.pem")}, {})
    assert ca_path is None and "cert" not in conf_options(text)


def test_with_the_real_pip(tmp_path: Path) -> None:
    """What the host's pip reports, through `pip config list`, ends up in a private pip.conf."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = tmp_path / "host-pip.conf"
    config.write_text(
        "[global]\n"
        "index-url = https://pypi.corp.example/simple\n"
        "extra-index-url = https://mirror.corp.example/simple\n"
        f"cert = {ca}\n"
        "find-links = /srv/wheels\n"
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PIP_") and not k.lower().endswith("_proxy")
    }
    env["PIP_CONFIG_FILE"] = str(config)
    out = tmp_path / "secrets"
    out.mkdir()
    script = REPO_ROOT / "deploy" / "image" / "pip_build_config.py"
    result = subprocess.run(
        [sys.executable, str(script), "--python", sys.executable, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == str(ca)
    written = out / "pip.conf"
    assert written.stat().st_mode & 0o777 == 0o600
    options = conf_options(written.read_text())
    assert options["index-url"] == "https://pypi.corp.example/simple"
    assert options["extra-index-url"] == "https://mirror.corp.example/simple"
    assert options["cert"] == gen.CA_TARGET
    assert "find-links" not in options


def dockerfile_instructions() -> list[str]:
    joined = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_every_pip_step_of_the_dockerfile_mounts_both_secrets() -> None:
    instructions = dockerfile_instructions()
    pip_steps = [line for line in instructions if line.startswith("RUN ") and "pip install" in line]
    assert len(pip_steps) >= 2
    for step in pip_steps:
        assert "--mount=type=secret,id=pip.conf,target=/run/secrets/pip.conf" in step, step
        assert f"--mount=type=secret,id=pip-ca.pem,target={gen.CA_TARGET}" in step, step
    builder_env = next(line for line in instructions if line.startswith("ENV ") and "PIP_" in line)
    assert "PIP_CONFIG_FILE=/run/secrets/pip.conf" in builder_env


def layer(files: dict[str, bytes]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("./run/secrets/pip-ca.pem", "a file in the build-secrets folder"),
        ("etc/pip.conf", "pip configuration"),
        ("/root/.config/pip/pip.conf", "pip configuration"),
        ("opt/venv/pip.conf", "pip configuration"),
    ],
)
def test_layer_scan_finds_pip_configuration_and_secrets(name: str, why: str) -> None:
    leaks = list(scan_layer(layer({name: b"[global]\n", "opt/venv/bin/python": b"x"}), "layer", {}))
    assert [(leak.path, leak.why) for leak in leaks] == [(name.lstrip("./"), why)]


def test_layer_scan_finds_a_copy_of_the_ca_bundle_under_any_name(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB...\n")
    forbidden = {sha256_of(ca): "the host CA bundle"}
    files = {"usr/local/share/ca-certificates/corp.crt": ca.read_bytes(), "etc/hostname": b"x\n"}
    leaks = list(scan_layer(layer(files), "layer", forbidden))
    assert [(leak.path, leak.why) for leak in leaks] == [
        ("usr/local/share/ca-certificates/corp.crt", "a copy of the host CA bundle")
    ]
