# The two commands of the README: `make serve` and `make test`. Both do their own set-up.
SHELL := /bin/bash
PYTHON ?= python3
# VENV can be pointed elsewhere (tests/test_install.py builds a fresh serving venv this way).
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: serving needs only the runtime dependencies; everything else (tests, lint, load
# tests, k8s checks) needs the dev extra and depends on $(STAMP).
SERVE_STAMP := $(VENV)/.installed-serve
STAMP := $(VENV)/.installed
APT_PACKAGES := redis-server prometheus chromium
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 2
export HOST PORT WORKERS

# Every version of what is installed, pinned: the serve set, the dev set and the image
# (Dockerfile) all install under this one constraints file; `make lock` refreshes it.
LOCK := requirements.lock
# Test workers of `make test`: most process tests wait on servers and sockets, so more workers
# than cores pay off (measured on 2 cores: docs/testing.md). `--dist loadgroup` keeps the tests
# of a module that share a server on one worker (tests/conftest.py marks them).
TEST_WORKERS ?= 4
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

.PHONY: install dev serve test test-suite test-fast lock lint typecheck unit system-deps clean

$(SERVE_STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e .
	touch $@

$(STAMP): $(SERVE_STAMP)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e '.[dev]'
	touch $@

## lock: re-resolve requirements.lock from pyproject.toml (keeps the pins that still fit;
## `make lock UPGRADE=1` moves every package to its newest fitting release)
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --quiet \
	  --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) --output-file $(LOCK)

## install: .venv with what serving needs, nothing more (what `make serve` uses)
install: $(SERVE_STAMP)

## dev: .venv with the dev extra too (tests, linters, load tests, k8s and image checks)
dev: $(STAMP)

## serve: install the runtime dependencies into .venv and serve the embedded default (gunicorn + uvicorn workers)
serve: $(SERVE_STAMP)
	@$(BIN)/autogen-service

## system-deps: the Debian packages the tests use (redis-server, prometheus/promtool, chromium for
## the browser tests, driven by Playwright: `playwright install` cannot download browsers here)
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check service tests loadtests uicheck deploy
	$(BIN)/ruff format --check service tests loadtests uicheck deploy

typecheck: $(STAMP)
	$(BIN)/mypy

## test: install into .venv (and apt packages), then ruff, mypy and the whole suite on
## $(TEST_WORKERS) workers, side by side (each one's output shown whole when it ends)
test: $(STAMP) system-deps
	@$(MAKE) --no-print-directory -j 3 --output-sync=target lint typecheck test-suite

test-suite: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

## test-fast: the in-process tests only (no server, redis, browser or subprocess), about a minute
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not process and not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache reports bench-results build *.egg-info

-include mk/*.mk
