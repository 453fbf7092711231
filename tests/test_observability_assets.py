"""Checks of the observability assets: Prometheus config and rules (with the real promtool),
Grafana dashboard and provisioning, OpenTelemetry Collector config, and the helpers that drive a
real Prometheus server against a scrape target."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from yamllint import linter
from yamllint.config import YamlLintConfig

from service.contract.protocols import API_NAMES
from service.observability.metrics import ServiceMetrics
from tests.helpers.observability import (
    CONTRACT_FILE,
    DASHBOARDS_DIR,
    OBSERVABILITY_DIR,
    PROMETHEUS_CONFIG,
    REPO_ROOT,
    RULES_FILE,
    RULES_TEST_FILE,
    asset_expressions,
    contract_metrics,
    dashboard_expressions,
    dashboard_files,
    dashboard_panel_expressions,
    exposed_metric_names,
    free_port,
    iter_panels,
    load_dashboard,
    load_rules,
    metric_names_used_in_assets,
    metric_series_used_in_assets,
    promql_identifiers,
    query,
    recording_rule_names,
    running_prometheus,
    strip_histogram_suffix,
    wait_for_query,
)

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; `make test` installs it)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus server not installed (Debian package `prometheus`; `make test` installs it)",
)

DASHBOARD = DASHBOARDS_DIR / "autogen-service.json"
DATASOURCES = OBSERVABILITY_DIR / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD_PROVIDERS = OBSERVABILITY_DIR / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
OTEL_COLLECTOR = OBSERVABILITY_DIR / "otel-collector.yaml"
DOCS = REPO_ROOT / "docs" / "observability.md"
YAML_FILES = [
    PROMETHEUS_CONFIG,
    RULES_FILE,
    RULES_TEST_FILE,
    DATASOURCES,
    DASHBOARD_PROVIDERS,
    OTEL_COLLECTOR,
]

# Grafana variables replaced by concrete values to run dashboard queries outside Grafana.
GRAFANA_SUBSTITUTIONS = {
    "$__rate_interval": "10s",
    "$__interval": "2s",
    "$__range": "1m",
    "$job": ".*",
    "$model": ".*",
    "$api": ".*",
}
MODEL_LABELLED = {
    "autogen_requests_total",
    "autogen_request_duration_seconds",
    "autogen_time_to_first_token_seconds",
    "autogen_stream_chunks_total",
    "autogen_tokens_total",
    "autogen_agent_messages_total",
}


def substitute_grafana_variables(expr: str) -> str:
    for variable, value in GRAFANA_SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard(DASHBOARD)


# --------------------------------------------------------------------------- promtool


@needs_promtool
def test_promtool_check_config() -> None:
    result = run_tool(str(PROMTOOL), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    result = run_tool(str(PROMTOOL), "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules() -> None:
    result = run_tool(str(PROMTOOL), "test", "rules", str(RULES_TEST_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@needs_promtool
def test_dashboard_queries_parse_with_promtool(tmp_path: Path, dashboard: dict[str, Any]) -> None:
    """Every dashboard expression, with Grafana variables filled in, is valid PromQL for Prometheus."""
    exprs = dashboard_expressions(dashboard)
    rules = [
        {"record": f"dashboard:query_{index}:check", "expr": substitute_grafana_variables(expr)}
        for index, expr in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run_tool(str(PROMTOOL), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- yaml


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_yamllint_relaxed(path: Path) -> None:
    config = YamlLintConfig("extends: relaxed\nrules:\n  line-length: {max: 180}\n")
    problems = list(linter.run(path.read_text(encoding="utf-8"), config, str(path)))
    assert not problems, "\n".join(f"{path}:{p.line}:{p.column} {p.level} {p.message}" for p in problems)


# --------------------------------------------------------------------------- metric names


def test_assets_use_only_contract_metrics() -> None:
    contract = contract_metrics()
    assert len(contract) >= 10, f"could not read the metric list of {CONTRACT_FILE}: {contract}"
    used = metric_names_used_in_assets()
    unknown = used - set(contract)
    assert not unknown, f"metrics used by dashboards/rules but not exposed by the service: {sorted(unknown)}"


def test_series_suffixes_match_metric_types() -> None:
    """Histograms are read through _bucket/_sum/_count only; counters and gauges never with those."""
    contract = contract_metrics()
    for series in metric_series_used_in_assets():
        base = strip_histogram_suffix(series)
        if contract.get(base) == "histogram":
            assert series != base, f"{series} is a histogram: use {series}_bucket/_sum/_count"
        else:
            assert series == base, f"{series}: {base} is a {contract.get(base)}, not a histogram"


def test_only_known_identifiers_in_expressions() -> None:
    """Anything that is not a service metric is a recording rule of rules.yml or a Prometheus series."""
    recorded = recording_rule_names()
    for asset, exprs in asset_expressions().items():
        for expr in exprs:
            for name in promql_identifiers(expr):
                if ":" in name:
                    assert name in recorded, f"{asset}: recording rule {name} is not defined in rules.yml"
                else:
                    assert name in {"up", "ALERTS"} or name.startswith("autogen_"), f"{asset}: {name}"


def test_dashboard_covers_every_contract_metric(dashboard: dict[str, Any]) -> None:
    used = set()
    for expr in dashboard_panel_expressions(dashboard):
        used |= {strip_histogram_suffix(name) for name in promql_identifiers(expr)}
    missing = set(contract_metrics()) - used
    assert not missing, f"no dashboard panel shows {sorted(missing)}"


def test_promql_identifier_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, model) (rate(autogen_x_seconds_bucket{model=~"$model",'
        'outcome="up"}[$__rate_interval]))) / on (model) group_left job:autogen_y:rate5m offset 5m '
        "> 1e-9 and absent(up) or vector(1) * scalar(autogen_z)"
    )
    assert promql_identifiers(expr) == {"autogen_x_seconds_bucket", "job:autogen_y:rate5m", "up", "autogen_z"}


def test_counters_are_rated_and_quantiles_keep_le() -> None:
    """Counters appear only inside rate()/increase(); histogram_quantile aggregates by le."""
    counters = [name for name, kind in contract_metrics().items() if kind == "counter"]
    # Panel and rule queries; template-variable selectors (label_values) legitimately name raw series.
    queries = {
        str(path.relative_to(REPO_ROOT)): dashboard_panel_expressions(load_dashboard(path))
        for path in dashboard_files()
    }
    queries[str(RULES_FILE.relative_to(REPO_ROOT))] = [rule["expr"] for rule in load_rules()]
    for asset, exprs in queries.items():
        for expr in exprs:
            for counter in counters:
                total = len(re.findall(rf"\b{counter}\b", expr))
                rated = len(re.findall(rf"\b(?:rate|increase)\(\s*{counter}\b", expr))
                assert total == rated, f"{asset}: raw counter {counter} in {expr!r}"
            for call in re.finditer(r"histogram_quantile\(", expr):
                inner = expr[call.end() :]
                assert re.search(r"by \((?:[^)]*\b)?le\b", inner), f"{asset}: quantile without le: {expr!r}"
                assert "_bucket" in inner and "rate(" in inner, f"{asset}: {expr!r}"


def test_exposed_metric_names_from_text_page() -> None:
    registry = CollectorRegistry()
    Counter("autogen_requests_total", "r", ["model"], registry=registry)  # no sample yet
    Counter("autogen_rejected_total", "r", registry=registry).inc()
    Histogram("autogen_request_duration_seconds", "d", registry=registry).observe(1)
    Gauge("autogen_active_streams", "s", registry=registry)
    from prometheus_client import generate_latest

    names = exposed_metric_names(generate_latest(registry).decode())
    assert names == {
        "autogen_requests_total",
        "autogen_rejected_total",
        "autogen_request_duration_seconds",
        "autogen_active_streams",
    }


# --------------------------------------------------------------------------- dashboard


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "autogen-service"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None
    assert "__inputs" not in dashboard and "__requires" not in dashboard


def test_no_import_placeholders() -> None:
    for path in dashboard_files():
        text = path.read_text(encoding="utf-8")
        assert "DS_PROMETHEUS" not in text, path
        assert "${DS_" not in text, path


def test_datasource_variable_used_everywhere(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for name in ("job", "model"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == expected
        assert variables[name]["definition"].startswith("label_values(")
    panels = [p for p in iter_panels(dashboard["panels"]) if p["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == expected


def test_dashboard_selectors_use_template_variables(dashboard: dict[str, Any]) -> None:
    for expr in dashboard_panel_expressions(dashboard):
        for match in re.finditer(r"\b(autogen_[a-z0-9_]++)(\{[^}]*\})?", expr):
            name, matchers = strip_histogram_suffix(match.group(1)), match.group(2) or ""
            assert 'job=~"$job"' in matchers, f"{name} without the job filter in {expr!r}"
            if name in MODEL_LABELLED:
                assert 'model=~"$model"' in matchers, f"{name} without the model filter in {expr!r}"


def test_dashboard_layout(dashboard: dict[str, Any]) -> None:
    panels = list(iter_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells


def test_dashboard_required_views(dashboard: dict[str, Any]) -> None:
    exprs = "\n".join(dashboard_panel_expressions(dashboard))
    assert 'outcome="rate_limited"' in exprs
    assert 'reason="overload"' in exprs
    assert "sum by (function) (rate(autogen_errors_total" in exprs
    assert "sum by (model, agent) (rate(autogen_agent_messages_total" in exprs
    assert "sum by (model, kind) (rate(autogen_tokens_total" in exprs
    assert "sum by (le, model) (rate(autogen_time_to_first_token_seconds_bucket" in exprs
    assert "sum by (le, model) (rate(autogen_request_duration_seconds_bucket" in exprs


# --------------------------------------------------------------------------- rules


def test_alerts_are_complete() -> None:
    alerts = alert_rules()
    names = {rule["alert"] for rule in alerts}
    for required in (
        "AutogenHighServerErrorRatio",
        "AutogenSlowTimeToFirstToken",
        "AutogenWorkflowConcurrencySaturation",
        "AutogenTargetDown",
        "AutogenRateLimiterFailingOpen",
    ):
        assert required in names
    anchors = {
        github_anchor(line.lstrip("#"))
        for line in DOCS.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    for rule in alerts:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/observability.md" and anchor in anchors, f"{rule['alert']}: no runbook section"


def test_every_rule_has_unit_tests() -> None:
    tests = yaml.safe_load(RULES_TEST_FILE.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["rules.yml"]
    fired: set[str] = set()
    silent: set[str] = set()
    tested_exprs = ""
    for case in tests["tests"]:
        for alert_test in case.get("alert_rule_test", []):
            (fired if alert_test.get("exp_alerts") else silent).add(alert_test["alertname"])
        tested_exprs += " ".join(t["expr"] for t in case.get("promql_expr_test", []))
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested not firing"
    assert fired | silent <= names, "tests refer to unknown alerts"
    untested = {name for name in recording_rule_names() if name not in tested_exprs}
    assert not untested, f"recording rules without a promql_expr_test: {untested}"


def test_prometheus_config_loads_rules_and_scrapes_service() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["rules.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    service = jobs["autogen-service"]
    assert service.get("metrics_path", "/metrics") == "/metrics"
    assert service["static_configs"][0]["targets"] == ["127.0.0.1:8000"]


# --------------------------------------------------------------------------- grafana provisioning, otel


def test_grafana_provisioning() -> None:
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    datasources = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    assert datasources["apiVersion"] == 1
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True
    assert datasource["url"].startswith(("http://", "$"))


def test_otel_collector_config() -> None:
    config = yaml.safe_load(OTEL_COLLECTOR.read_text(encoding="utf-8"))
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["processors"][0] == "memory_limiter" and pipeline["processors"][-1] == "batch"
    assert "debug" in pipeline["exporters"] and any(e.startswith("otlp") for e in pipeline["exporters"])
    for kind in ("receivers", "processors", "exporters"):
        for component in pipeline[kind]:
            assert component in config[kind], f"{component} is not defined under {kind}"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]


# --------------------------------------------------------------------------- real Prometheus


class FakeService:
    """The service's own metric families (`ServiceMetrics`), moved in the background like live traffic."""

    def __init__(self) -> None:
        self.metrics = ServiceMetrics(known_models=["demo-team"], known_agents=["writer"])
        self.registry = self.metrics.registry
        self.probe = Counter(
            "helper_probe_total", "Probe counter for the helper test.", registry=self.registry
        )
        self.stop = threading.Event()
        self.probe.inc(3)
        self.metrics.active_streams.set(2)
        self.metrics.active_workflows.set(5)

    def tick(self) -> None:
        metrics = self.metrics
        for outcome in ("ok", "client_error", "server_error", "rate_limited", "cancelled", "timeout"):
            for api in API_NAMES:
                observer = metrics.request("demo-team", stream=True, api=api)
                observer.first_content()
                observer.finish(outcome)  # type: ignore[arg-type]
        for function in ("handle_response", "generate_streaming_response"):
            metrics.errors.labels(function).inc()
        observer = metrics.request("demo-team", stream=True)
        observer.chunks(10)
        observer.tokens(20, 30)
        observer.agent_message("writer")
        observer.model_call()
        metrics.ratelimit_storage_errors.inc()
        for operation in ("load", "save"):
            metrics.state_seconds.labels(operation).observe(0.004)
        metrics.state_bytes.observe(9000)
        metrics.state_errors.inc()
        for reason in ("overload", "body_too_large", "unauthorized"):
            metrics.rejected.labels(reason).inc()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.tick()


@pytest.fixture(scope="module")
def prometheus_against_fake_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if PROMETHEUS is None:
        pytest.skip("prometheus server not installed (Debian package `prometheus`; `make test` installs it)")
    fake = FakeService()
    fake.tick()
    port = free_port()
    server, server_thread = start_http_server(port, addr="127.0.0.1", registry=fake.registry)
    ticker = threading.Thread(target=fake.run, daemon=True)
    ticker.start()
    try:
        with running_prometheus(
            f"127.0.0.1:{port}", tmp_path_factory.mktemp("prometheus"), rule_files=[RULES_FILE]
        ) as base_url:
            yield base_url, f"127.0.0.1:{port}"
    finally:
        fake.stop.set()
        ticker.join(timeout=5)
        server.shutdown()
        server.server_close()
        server_thread.join(timeout=5)


@needs_prometheus
def test_start_prometheus_scrapes_target(prometheus_against_fake_service: tuple[str, str]) -> None:
    base_url, target = prometheus_against_fake_service
    result = wait_for_query(base_url, 'helper_probe_total{job="autogen-service"}')
    assert result[0]["metric"]["instance"] == target
    assert float(result[0]["value"][1]) == 3.0
    assert float(query(base_url, f'up{{instance="{target}"}}')[0]["value"][1]) == 1.0


@needs_prometheus
def test_dashboard_panels_return_data(prometheus_against_fake_service: tuple[str, str]) -> None:
    """Against contract-shaped metrics, every panel query runs on a real Prometheus and returns data."""
    base_url, _ = prometheus_against_fake_service
    dashboard = load_dashboard(DASHBOARD)
    for expr in dashboard_panel_expressions(dashboard):
        promql = substitute_grafana_variables(expr)
        result = wait_for_query(base_url, promql, timeout=20)
        assert result, promql


@needs_prometheus
def test_recording_rules_evaluate(prometheus_against_fake_service: tuple[str, str]) -> None:
    base_url, _ = prometheus_against_fake_service
    for name in sorted(recording_rule_names()):
        result = wait_for_query(base_url, name, timeout=20)
        assert {sample["metric"]["job"] for sample in result} == {"autogen-service"}, name
    ratio = wait_for_query(base_url, "job_model:autogen_requests_errors:ratio_rate5m")
    # server_error + timeout = 2 of the 6 outcomes incremented at the same pace.
    assert float(ratio[0]["value"][1]) == pytest.approx(1 / 3, rel=0.05)


def test_dashboard_api_variable_reads_the_registered_protocols_from_the_metric(
    dashboard: dict[str, Any],
) -> None:
    """A new protocol shows up in the dashboard by its `api` label alone: the variable's values
    come from the metric, and no panel names an API."""
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    api = variables["api"]
    assert api["type"] == "query" and "label_values(autogen_requests_total" in api["definition"]
    assert api["options"] == [] and api["includeAll"]
    text = json.dumps(dashboard["panels"])
    for name in API_NAMES:
        assert f'api=\\"{name}\\"' not in text and f"`{name}`" not in text
    for expr in dashboard_panel_expressions(dashboard):
        if "autogen_requests_total{" in expr and 'model=~"$model"' in expr:
            assert 'api=~"$api"' in expr, expr
