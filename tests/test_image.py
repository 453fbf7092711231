"""The built image, run as Kubernetes runs it: read-only root, no capabilities, uid 10001.

Run by `make image-test` (which builds the image first and sets IMAGE_UNDER_TEST); skipped in
`make test`. podman runs the container with the flags this kind of machine needs (runc, explicit
ulimits, no healthcheck timer, host network: docs/image.md); the service binds 127.0.0.1 on a free
port.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers import distributions
from tests.helpers.image import (
    REPO_ROOT,
    added_layers,
    inspect,
    pip_build_config,
    podman,
    scan_layer,
    sha256_of,
)
from tests.helpers.server import free_port

IMAGE = os.environ.get("IMAGE_UNDER_TEST", "")
if not IMAGE:
    pytest.skip("run by `make image-test` (builds the image, sets IMAGE_UNDER_TEST)", allow_module_level=True)
pytestmark = pytest.mark.timeout(300)

USER = "10001:10001"
# As the Deployment runs it (k8s/base/deployment.yaml): read-only root with a writable /tmp only,
# every capability dropped, no privilege escalation, the image's numeric user. Then what podman
# needs on this kind of machine: runc (crun refuses its cgroup set-up), explicit ulimits (the
# defaults need a capability the sandbox lacks), no healthcheck timer (it needs systemd), and the
# host network (no bridge).
RUN_FLAGS = (
    "--read-only",
    "--read-only-tmpfs=false",
    "--tmpfs=/tmp:rw,nosuid,nodev,size=64m,mode=1777",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    f"--user={USER}",
    "--runtime=runc",
    "--ulimit=nofile=8192:8192",
    "--ulimit=nproc=4096:4096",
    "--no-healthcheck",
    "--network=host",
)
READY_TIMEOUT_S = 120


@dataclass
class Container:
    name: str
    base_url: str
    api_key: str

    def pid(self) -> int:
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, check=False, timeout=60)

    def stop(self) -> int:
        """SIGTERM (the image's STOPSIGNAL), up to 30 s, and the exit code."""
        podman("stop", "--time=30", self.name, timeout=90)
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout)


def start(api_key: str) -> Container:
    name = f"autogen-image-test-{secrets.token_hex(4)}"
    port = free_port()
    environment = {"HOST": "127.0.0.1", "PORT": str(port), "WORKERS": "2", "API_KEYS": api_key}
    env_flags = [f"--env={key}={value}" for key, value in environment.items()]
    podman("run", "--detach", f"--name={name}", *RUN_FLAGS, *env_flags, IMAGE)
    container = Container(name, f"http://127.0.0.1:{port}", api_key)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        if state != "true":
            logs = container.logs()
            podman("rm", "--force", name, check=False)
            pytest.fail(f"the container exited before it was ready:\n{logs[-4000:]}")
        try:
            if httpx.get(f"{container.base_url}/readyz", timeout=2).status_code == 200:
                return container
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    logs = container.logs()
    podman("rm", "--force", name, check=False)
    pytest.fail(f"not ready in {READY_TIMEOUT_S} s:\n{logs[-4000:]}")


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    running = start("image-test-" + secrets.token_hex(16))
    try:
        yield running
    finally:
        podman("rm", "--force", "--time=30", running.name, check=False, timeout=90)


def container_pids(root: int) -> list[int]:
    """The container's processes: its first process and every descendant (read on the host)."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
    return pids


def test_image_metadata() -> None:
    config = inspect(IMAGE)
    assert config["User"] == USER, "the Deployment's runAsUser/runAsGroup are 10001"
    labels = config["Labels"]
    assert isinstance(labels, dict)
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"])
    healthcheck = config.get("Healthcheck")
    assert isinstance(healthcheck, dict), "the HEALTHCHECK is kept (docker image format, not OCI)"
    assert healthcheck["Test"][0] == "CMD"
    image_config = config["Config"]
    assert isinstance(image_config, dict)
    assert image_config["StopSignal"] == "SIGTERM"
    assert list(image_config["ExposedPorts"]) == ["8000/tcp"]
    print(
        f"{IMAGE}: {int(str(config['Size'])) / 1e6:.0f} MB; base: "
        + (
            f"Debian stand-in for {labels['io.autogen-service.standin-for']}"
            if "io.autogen-service.standin-for" in labels
            else "pulled"
        )
    )


@pytest.fixture(scope="module")
def image_venv() -> distributions.Environment:
    """What the image's /opt/venv really holds, read inside a container of the image."""
    return distributions.probe(["podman", "run", "--rm", *RUN_FLAGS, "--entrypoint=python", IMAGE, "-c"])


def test_image_venv_holds_what_serving_needs_and_no_dev_tool(image_venv: distributions.Environment) -> None:
    distributions.assert_serving_only(image_venv, "the image's /opt/venv")


def test_image_venv_agrees_with_the_lock_and_the_test_venv(image_venv: distributions.Environment) -> None:
    """The image ships requirements.lock's versions, the ones the tests ran (tests/test_install.py
    holds `make serve`'s venv to the same lock)."""
    distributions.assert_agree(
        {"the image's /opt/venv": image_venv, "the test venv": distributions.this_environment()},
        complete=["the image's /opt/venv"],
    )


def test_health_and_readiness(container: Container) -> None:
    assert httpx.get(f"{container.base_url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = httpx.get(f"{container.base_url}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text


def test_healthcheck_command_passes(container: Container) -> None:
    healthcheck = inspect(IMAGE)["Healthcheck"]
    assert isinstance(healthcheck, dict)
    result = container.exec(*healthcheck["Test"][1:])
    assert result.returncode == 0, result.stderr[-2000:]


def test_authenticated_chat_completion(container: Container) -> None:
    client = openai.OpenAI(base_url=f"{container.base_url}/v1", api_key=container.api_key, max_retries=0)
    assert "demo-team" in [model.id for model in client.models.list()]
    completion = client.chat.completions.create(
        model="demo-team", messages=[{"role": "user", "content": "What is AutoGen?"}]
    )
    assert completion.choices[0].message.content
    stream = client.chat.completions.create(
        model="demo-team", messages=[{"role": "user", "content": "What is AutoGen?"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text


def test_requests_without_a_valid_key_are_refused(container: Container) -> None:
    client = openai.OpenAI(
        base_url=f"{container.base_url}/v1", api_key="wrong-" + secrets.token_hex(8), max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="demo-team", messages=[{"role": "user", "content": "hi"}])
    body = {"model": "demo-team", "messages": [{"role": "user", "content": "hi"}]}
    anonymous = httpx.post(f"{container.base_url}/v1/chat/completions", json=body, timeout=30)
    assert anonymous.status_code == 401, anonymous.text


def test_metrics_are_written_under_the_read_only_root(container: Container) -> None:
    client = openai.OpenAI(base_url=f"{container.base_url}/v1", api_key=container.api_key, max_retries=0)
    client.chat.completions.create(model="demo-team", messages=[{"role": "user", "content": "hi"}])
    metrics = httpx.get(f"{container.base_url}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert 'model="demo-team"' in metrics.text


def test_processes_run_as_10001_without_capabilities(container: Container) -> None:
    pids = container_pids(container.pid())
    assert len(pids) >= 3, "gunicorn and its two workers"
    for pid in pids:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        assert status["Uid"].split() == ["10001"] * 4, (pid, status["Uid"])
        assert status["Gid"].split() == ["10001"] * 4, (pid, status["Gid"])
        for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[capabilities], 16) == 0, (pid, capabilities, status[capabilities])
        assert status["NoNewPrivs"].strip() == "1"


def test_root_filesystem_is_read_only_and_tmp_writable(container: Container) -> None:
    for path in ("/opt/venv/written", "/app/written", "/etc/written"):
        result = container.exec("python", "-c", f"open({path!r}, 'w')")
        assert result.returncode != 0 and "Read-only file system" in result.stderr, (path, result.stderr)
    assert container.exec("python", "-c", "open('/tmp/written', 'w').write('ok')").returncode == 0


def test_stops_cleanly_on_sigterm_with_no_error_logged() -> None:
    running = start("image-test-" + secrets.token_hex(16))
    try:
        client = openai.OpenAI(base_url=f"{running.base_url}/v1", api_key=running.api_key, max_retries=0)
        client.chat.completions.create(model="demo-team", messages=[{"role": "user", "content": "hi"}])
        exit_code = running.stop()
        logs = running.logs()
    finally:
        podman("rm", "--force", running.name, check=False)
    assert exit_code == 0, f"exit code {exit_code} (137: killed after the stop timeout)\n{logs[-3000:]}"
    assert "Shutting down: Master" in logs
    errors = [
        line
        for line in logs.splitlines()
        if re.search(r'\[(ERROR|CRITICAL)\]|"level": "(ERROR|CRITICAL)"', line)
    ]
    assert not errors, "\n".join(errors)


def test_no_pip_configuration_or_ca_bundle_in_any_layer(tmp_path: Path) -> None:
    """The build's pip secrets (what build.sh mounts: made again here the same way) left no trace."""
    generator = pip_build_config()
    pip_conf, ca_bundle = generator.build_config(
        generator.host_pip_options(os.environ.get("PYTHON", "python3")), os.environ
    )
    forbidden = {hashlib.sha256(pip_conf.encode()).hexdigest(): "the build's pip.conf secret"}
    if ca_bundle is not None:
        forbidden[sha256_of(Path(ca_bundle))] = f"the host CA bundle {ca_bundle}"
    # The layers the build added: those the base (named by the image's own label) does not have.
    labels = inspect(IMAGE)["Labels"]
    assert isinstance(labels, dict)
    base_image = labels["org.opencontainers.image.base.name"]
    base_layers = json.loads(
        podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", base_image).stdout
    )
    saved = tmp_path / "image"
    podman("save", "--format=oci-dir", f"--output={saved}", IMAGE, timeout=300)
    layers = added_layers(saved, base_layers)
    assert layers, "the build added layers"
    leaks = []
    for diff_id, blob in layers:
        with tarfile.open(blob, "r:*") as layer:
            leaks.extend(scan_layer(layer, diff_id, forbidden))
    assert not leaks, leaks
    history = podman("history", "--no-trunc", "--format={{.CreatedBy}}", IMAGE).stdout
    for line in pip_conf.splitlines():
        name, _, value = line.partition(" = ")
        if name in ("index-url", "extra-index-url", "proxy", "trusted-host"):
            assert value not in history, f"{name} in the image history"
