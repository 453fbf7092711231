"""Helpers for the observability assets (dashboards, Prometheus rules) and a real Prometheus server.

Two groups of helpers:

* static analysis of the assets in ``observability/``: which metric series the PromQL of the Grafana
  dashboards and of ``rules.yml`` reads (:func:`metric_names_used_in_assets`), what the service contract
  promises (:func:`contract_metrics`), and what a live ``/metrics`` page exposes
  (:func:`exposed_metric_names`), so that all three can be compared;
* a real ``prometheus`` server scraping a target on 127.0.0.1 (:func:`start_prometheus`,
  :func:`running_prometheus`, :func:`query`, :func:`wait_for_query`).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY_DIR = REPO_ROOT / "observability"
DASHBOARDS_DIR = OBSERVABILITY_DIR / "grafana" / "dashboards"
PROMETHEUS_DIR = OBSERVABILITY_DIR / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_FILE = PROMETHEUS_DIR / "rules.yml"
RULES_TEST_FILE = PROMETHEUS_DIR / "rules_test.yml"
CONTRACT_FILE = REPO_ROOT / "docs" / "service-contract.md"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# Series that Prometheus itself produces for every target or rule: not exposed by the service.
PROMETHEUS_SYNTHETIC_SERIES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "ALERTS",
        "ALERTS_FOR_STATE",
    }
)

_PROMQL_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    }
)

_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS_RE = re.compile(r"\{[^{}]*\}")
_RANGE_RE = re.compile(r"\[[^\[\]]*\]")
_GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER_RE = re.compile(r"(?<![\w.$:])[a-zA-Z_:][a-zA-Z0-9_:]*+")
_LABEL_VALUES_RE = re.compile(r"^\s*label_values\((?P<expr>.*),\s*[a-zA-Z_]\w*\s*\)\s*$", re.DOTALL)
_QUERY_RESULT_RE = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.DOTALL)
_CONTRACT_NAME_RE = re.compile(r"`(autogen_[a-z0-9_]+)")


# --------------------------------------------------------------------------- PromQL parsing


def promql_identifiers(expr: str) -> set[str]:
    """Metric (and recording-rule) names read by a PromQL expression.

    Removes strings, label matchers, ranges and grouping clauses, then keeps the identifiers that are
    not functions (followed by ``(``), keywords, numbers or Grafana ``$variables``.
    """
    text = _STRING_RE.sub('""', expr)
    text = _MATCHERS_RE.sub(" ", text)
    text = _RANGE_RE.sub(" ", text)
    text = _GROUPING_RE.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER_RE.finditer(text):
        name = match.group(0)
        if text[match.end() :].lstrip().startswith("("):
            continue  # function or aggregation
        if name.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def grafana_variable_query_expr(query: str) -> str | None:
    """The PromQL inside a Grafana Prometheus variable query, or None (e.g. ``label_values(job)``)."""
    for pattern in (_LABEL_VALUES_RE, _QUERY_RESULT_RE):
        match = pattern.match(query)
        if match:
            return match.group("expr")
    return None


# --------------------------------------------------------------------------- assets


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def iter_panels(panels: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_panel_expressions(dashboard: dict[str, Any]) -> list[str]:
    """PromQL of every panel target."""
    return [
        target["expr"]
        for panel in iter_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """PromQL of every panel target, annotation query and template-variable query of a dashboard."""
    exprs = dashboard_panel_expressions(dashboard)
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            exprs.append(annotation["expr"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        inner = grafana_variable_query_expr(query or "")
        if inner:
            exprs.append(inner)
    return exprs


def load_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """All rules (recording and alerting) of a plain Prometheus rule file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def recording_rule_names(path: Path = RULES_FILE) -> set[str]:
    return {rule["record"] for rule in load_rules(path) if "record" in rule}


def asset_expressions() -> dict[str, list[str]]:
    """PromQL of every asset, keyed by the asset's path relative to the repository."""
    exprs = {
        str(path.relative_to(REPO_ROOT)): dashboard_expressions(load_dashboard(path))
        for path in dashboard_files()
    }
    exprs[str(RULES_FILE.relative_to(REPO_ROOT))] = [rule["expr"] for rule in load_rules()]
    return exprs


def metric_series_used_in_assets() -> set[str]:
    """Raw series names (``_bucket`` etc. kept) that the assets read from the service."""
    recorded = recording_rule_names()
    names: set[str] = set()
    for exprs in asset_expressions().values():
        for expr in exprs:
            names |= promql_identifiers(expr)
    return {name for name in names if name not in recorded and name not in PROMETHEUS_SYNTHETIC_SERIES}


def strip_histogram_suffix(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def metric_names_used_in_assets() -> set[str]:
    """The metric names the dashboards and rules need the service to expose.

    Counters keep their ``_total`` (``autogen_requests_total``); histograms are named without
    ``_bucket``/``_sum``/``_count`` (``autogen_request_duration_seconds``). Series made by Prometheus
    itself (``up``, ``ALERTS``) and the recording rules of rules.yml are left out. Compare with
    :func:`contract_metrics` or with :func:`exposed_metric_names` of a live ``/metrics`` page.
    """
    return {strip_histogram_suffix(name) for name in metric_series_used_in_assets()}


# --------------------------------------------------------------------------- contract and live page


def contract_metrics(path: Path = CONTRACT_FILE) -> dict[str, str]:
    """Metric name -> type (counter, gauge, histogram) from the contract's "Prometheus metrics" section."""
    section = path.read_text(encoding="utf-8").split("## Prometheus metrics", 1)[1].split("\n## ", 1)[0]
    metrics: dict[str, str] = {}
    for line in section.splitlines():
        names = _CONTRACT_NAME_RE.findall(line)
        if not names:
            continue
        prose = _STRING_RE.sub("", line).lower()
        kind = next((k for k in ("histogram", "counter", "gauge") if k in prose), "unknown")
        for name in names:
            metrics[name] = kind
    return metrics


def exposed_metric_names(metrics_text: str) -> set[str]:
    """Metric names of a Prometheus text page, in the form of :func:`metric_names_used_in_assets`.

    Families declared by ``# TYPE`` count even without samples (a labelled counter that has not been
    incremented yet). ``_created`` companions are ignored.
    """
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(metrics_text))
    by_name = {family.name: family.type for family in families}
    names: set[str] = set()
    for family in families:
        if family.name.endswith("_created") and family.name[: -len("_created")] in by_name:
            continue
        if family.type == "counter":
            names.add(f"{family.name}_total")
        else:
            names.add(family.name)
    return names


# --------------------------------------------------------------------------- real Prometheus server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate a child process, kill it if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def start_prometheus(
    scrape_target: str,
    tmp_path: Path,
    *,
    rule_files: Sequence[Path] = (),
    job_name: str = "autogen-service",
    timeout: float = 30.0,
    bearer_token: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the real ``prometheus`` server scraping ``scrape_target`` (host:port) every second.

    Listens on 127.0.0.1 on a free port, keeps its TSDB in ``tmp_path`` and evaluates ``rule_files``
    every second. Returns once ``/-/ready`` answers 200 (``RuntimeError`` otherwise, with the server
    log). The caller must stop the process (:func:`stop_process`) or use :func:`running_prometheus`.

    Prometheus hands new targets to its scrape manager every 5 s, so the first samples arrive about
    5 s after this returns: poll with :func:`wait_for_query`. The job is ``job_name`` (default
    ``autogen-service``, as in prometheus.yml), so rules.yml can be loaded unchanged. With
    ``bearer_token`` it scrapes as a ServiceMonitor with the `METRICS_TOKEN` Secret does.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("the prometheus server binary is not installed (Debian package: prometheus)")
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(Path(path).resolve()) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": job_name,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [scrape_target]}],
                **(
                    {"authorization": {"type": "Bearer", "credentials": bearer_token}} if bearer_token else {}
                ),
            }
        ],
    }
    config_path = tmp_path / "prometheus-test.yml"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is valid YAML
    log_path = tmp_path / "prometheus.log"

    last_error = "not started"
    for _attempt in range(3):  # the free port may be taken between free_port() and the bind
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    last_error = f"prometheus exited with {process.returncode}"
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base_url}/-/ready", timeout=1.0).status_code == 200:
                        return process, base_url
                time.sleep(0.1)
            else:
                last_error = f"prometheus not ready after {timeout} s"
        except BaseException:
            stop_process(process)
            raise
        stop_process(process)
        log_text = log_path.read_text(encoding="utf-8", errors="replace")
        if "address already in use" not in log_text:
            break
    raise RuntimeError(f"{last_error}; log:\n{log_path.read_text(encoding='utf-8', errors='replace')}")


@contextlib.contextmanager
def running_prometheus(
    scrape_target: str,
    tmp_path: Path,
    *,
    rule_files: Sequence[Path] = (),
    timeout: float = 30.0,
    bearer_token: str | None = None,
) -> Iterator[str]:
    """Context manager around :func:`start_prometheus`: yields the base URL, always stops the server."""
    process, base_url = start_prometheus(
        scrape_target, tmp_path, rule_files=rule_files, timeout=timeout, bearer_token=bearer_token
    )
    try:
        yield base_url
    finally:
        stop_process(process)


def query(base_url: str, promql: str, *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Instant query; returns ``data.result`` (a list of ``{"metric": {...}, "value": [ts, "v"]}``).

    Raises ``httpx.HTTPStatusError`` for a bad expression (HTTP 400 with Prometheus' message in it).
    """
    response = httpx.get(f"{base_url}/api/v1/query", params={"query": promql}, timeout=timeout)
    if response.status_code >= 400:
        raise httpx.HTTPStatusError(
            f"{response.status_code} for query {promql!r}: {response.text}",
            request=response.request,
            response=response,
        )
    body = response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"query {promql!r} failed: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for_query(
    base_url: str,
    promql: str,
    *,
    predicate: Callable[[list[dict[str, Any]]], bool] = bool,
    timeout: float = 15.0,
    interval: float = 0.25,
) -> list[dict[str, Any]]:
    """Repeat :func:`query` until ``predicate(result)`` holds (default: non-empty); TimeoutError else."""
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while True:
        result = query(base_url, promql)
        if predicate(result):
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{promql!r} did not match within {timeout} s; last result: {result}")
        time.sleep(interval)
