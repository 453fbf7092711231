"""Wrap observability/prometheus/rules.yml into the PrometheusRule object that kustomize deploys.

rules.yml (plain Prometheus `groups:` format, checked by promtool) is the one source of truth.
Kustomize cannot embed a file's YAML into an object's `spec`, so this script writes
observability/prometheus-operator/prometheusrule.yaml with `spec.groups` equal to the `groups` of rules.yml:

    python observability/sync_prometheusrule.py          # regenerate (`make k8s-rules`)
    python observability/sync_prometheusrule.py --check  # exit 1 if it is stale (`make k8s-check`)

tests/test_deploy.py also proves that the rendered PrometheusRule carries exactly those groups.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "prometheus" / "rules.yml"
OUTPUT = HERE / "prometheus-operator" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from observability/prometheus/rules.yml by `make k8s-rules`
# (observability/sync_prometheusrule.py): do not edit, edit rules.yml and regenerate.
# The `release` label is the default ruleSelector of the kube-prometheus-stack chart installed
# as `kube-prometheus-stack`; change it to match your Prometheus (docs/deploy.md).
"""


class _Dumper(yaml.SafeDumper):
    """Indented lists and block style for multi-line strings (PromQL), as a person writes them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def prometheus_rule(rules_text: str) -> dict[str, Any]:
    """The PrometheusRule object for the rule file's text."""
    document = yaml.safe_load(rules_text)
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ValueError(f"{RULES} has no `groups:` list")
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "autogen-service",
            "labels": {
                "app.kubernetes.io/name": "autogen-service",
                "app.kubernetes.io/component": "api",
                "release": "kube-prometheus-stack",
            },
        },
        "spec": {"groups": document["groups"]},
    }


def render(rules_text: str) -> str:
    body = yaml.dump(prometheus_rule(rules_text), Dumper=_Dumper, sort_keys=False, width=100)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the output is up to date")
    args = parser.parse_args(argv)
    expected = render(RULES.read_text(encoding="utf-8"))
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    if args.check:
        if current != expected:
            print(f"{OUTPUT} is stale: run `make k8s-rules`", file=sys.stderr)
            return 1
        print(f"{OUTPUT} is up to date with {RULES}")
        return 0
    if current != expected:
        OUTPUT.write_text(expected, encoding="utf-8")
        print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
