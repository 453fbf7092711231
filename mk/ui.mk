# The service behind a real Open WebUI in a real browser (uicheck/). Included by the top-level Makefile.
# Heavy (a ~3 GB venv, a few minutes to install the first time): never part of `make test`.
#
#   make ui-check                                   start the service (DIRECT_MODEL=on), check, stop
#   make ui-check UI_CHECK_TARGET=http://127.0.0.1:8000 [UI_CHECK_API_KEY=...]   check a running service
#   make ui-install                                 only install (Debian chromium, .ui-venv)
#   make ui-lint                                    ruff + mypy --strict on uicheck/ (needs .ui-venv)
UI_VENV := .ui-venv
UI_BIN := $(UI_VENV)/bin
UI_STAMP := $(UI_VENV)/.installed
UI_CHECK_TARGET ?=
UI_CHECK_API_KEY ?=
UI_CHECK_ARGS ?=

.PHONY: ui-install ui-check ui-lint ui-clean

# torch is installed from the machine's CPU-only wheel by its pin (see uicheck/requirements.txt).
$(UI_STAMP): uicheck/requirements.txt
	@start=$$(date +%s); \
	test -x $(UI_BIN)/python || $(PYTHON) -m venv $(UI_VENV); \
	$(UI_BIN)/python -m pip install --quiet --upgrade pip && \
	$(UI_BIN)/python -m pip install --quiet -r uicheck/requirements.txt && \
	echo "ui-install: $(UI_VENV) installed in $$(( $$(date +%s) - start )) s ($$(du -sh $(UI_VENV) | cut -f1))" && \
	touch $@

## ui-install: Debian's chromium (if missing) and Open WebUI 0.12.4 + Playwright in .ui-venv
ui-install: $(UI_STAMP)
	@command -v chromium >/dev/null || { \
	  echo "installing chromium with apt"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

## ui-check: Open WebUI in chromium against the service: answer shown alone, team work folded, no extra runs
ui-check:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory install ui-install && \
	PYTHONPATH=$(CURDIR) $(UI_BIN)/python -m uicheck \
	  $(if $(UI_CHECK_TARGET),--target '$(UI_CHECK_TARGET)') $(if $(UI_CHECK_API_KEY),--api-key '$(UI_CHECK_API_KEY)') \
	  $(UI_CHECK_ARGS); \
	rc=$$?; echo "make ui-check: $$(( $$(date +%s) - start )) s in all"; exit $$rc

## ui-lint: ruff and mypy --strict on uicheck/ (mypy resolves Playwright and aiohttp in .ui-venv)
ui-lint: $(STAMP) $(UI_STAMP)
	$(BIN)/ruff check uicheck
	$(BIN)/ruff format --check uicheck
	$(BIN)/mypy --strict --python-executable $(UI_BIN)/python --no-namespace-packages -p uicheck

ui-clean:
	rm -rf $(UI_VENV) reports/ui-check
