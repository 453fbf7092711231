"""Reading a built image: its layers (what the build added to the base) and their files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where pip looks for configuration (pip's site, user and XDG files) and where build secrets are
# mounted: none of it may be a file of the image.
PIP_CONFIG_NAMES = frozenset({"pip.conf", "pip.ini"})
SECRET_DIRS = (PurePosixPath("run/secrets"),)


def pip_build_config() -> ModuleType:
    """deploy/image/pip_build_config.py, the generator of the build's pip secrets."""
    path = REPO_ROOT / "deploy" / "image" / "pip_build_config.py"
    spec = importlib.util.spec_from_file_location("pip_build_config", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr[-3000:]}"
    return result


def inspect(image: str) -> dict[str, object]:
    data: list[dict[str, object]] = json.loads(podman("image", "inspect", image).stdout)
    return data[0]


@dataclass(frozen=True)
class Leak:
    layer: str
    path: str
    why: str


def _normalised(name: str) -> PurePosixPath:
    """A layer member's path relative to the root (`./etc/x`, `/etc/x` and `etc/x` alike)."""
    return PurePosixPath("/", name).relative_to("/")


def scan_layer(layer: tarfile.TarFile, label: str, forbidden_digests: dict[str, str]) -> Iterator[Leak]:
    """Files of one layer that are pip configuration, build secrets, or copies of secret files
    (`forbidden_digests`: sha256 -> what it is)."""
    for member in layer:
        path = _normalised(member.name)
        if not member.isfile():
            continue
        if path.name in PIP_CONFIG_NAMES:
            yield Leak(label, str(path), "pip configuration")
        if any(parent in path.parents for parent in SECRET_DIRS):
            yield Leak(label, str(path), "a file in the build-secrets folder")
        handle = layer.extractfile(member)
        if handle is None:
            continue
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest in forbidden_digests:
            yield Leak(label, str(path), f"a copy of {forbidden_digests[digest]}")


def added_layers(saved: Path, base_diff_ids: Iterable[str]) -> list[tuple[str, Path]]:
    """(diff id, blob path) of each layer of an `podman save --format oci-dir` image that its base
    does not have."""
    index = json.loads((saved / "index.json").read_text())
    blobs = saved / "blobs"

    def blob(digest: str) -> Path:
        algorithm, _, value = digest.partition(":")
        return blobs / algorithm / value

    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    diff_ids: list[str] = config["rootfs"]["diff_ids"]
    assert len(diff_ids) == len(manifest["layers"])
    base = set(base_diff_ids)
    return [
        (diff_id, blob(layer["digest"]))
        for diff_id, layer in zip(diff_ids, manifest["layers"], strict=True)
        if diff_id not in base
    ]


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
