# Every target installs what it needs: a fresh Debian/Ubuntu machine with git, Python 3.11+ and
# make is enough. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.stamp-installed
APT_STAMP := $(VENV)/.stamp-apt

.PHONY: help venv system-deps npm-deps lint typecheck unit test demo bench generate check-generated clean

help:
	@echo "make demo    start the simulator and the exporter against it"
	@echo "make test    lint, type-check and run every test (installs what it needs)"
	@echo "make bench   compare this exporter with a naive official-SDK poller"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

# Real Prometheus, promtool and Alertmanager from Debian, for the end-to-end tests (without them
# those tests skip). Installed only when one of the binaries is missing, as root or with sudo.
# While apt runs, a policy-rc.d that exits 101 keeps the packages from starting their own daemons
# on 9090/9093; it is removed afterwards unless it was there before.
E2E_BINARIES := prometheus promtool prometheus-alertmanager amtool
POLICY_RC_D  ?= /usr/sbin/policy-rc.d

$(APT_STAMP): | $(STAMP)
	@missing=""; for tool in $(E2E_BINARIES); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian's prometheus and prometheus-alertmanager (missing:$$missing)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "error: root or sudo is needed to apt-get install prometheus prometheus-alertmanager;" \
	    "install them yourself, or run 'make unit' (everything but the end-to-end tests)" >&2; exit 1; fi; \
	  if ! command -v apt-get >/dev/null; then echo "error: no apt-get: install Prometheus (with promtool)" \
	    "and Alertmanager (as prometheus-alertmanager, with amtool) yourself, or run 'make unit'" >&2; exit 1; fi; \
	  created=""; \
	  if [ ! -e $(POLICY_RC_D) ]; then \
	    printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $(POLICY_RC_D) >/dev/null && $$SUDO chmod 0755 $(POLICY_RC_D) && created=1; \
	  fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager >/dev/null; status=$$?; \
	  if [ -n "$$created" ]; then $$SUDO rm -f $(POLICY_RC_D); fi; \
	  [ $$status = 0 ] || { echo "error: apt-get install failed; or run 'make unit'" >&2; exit $$status; }; \
	  for tool in $(E2E_BINARIES); do command -v $$tool >/dev/null || { echo "error: $$tool still missing" >&2; exit 1; }; done; \
	fi
	touch $@

system-deps: $(APT_STAMP)

# typescript and @grafana/schema for the dashboards' typecheck (tests/dashboard_typecheck.py),
# pinned in dashboards/typecheck/package-lock.json. node and npm come from Debian when missing
# (as root or with sudo, like prometheus above).
NPM_DIR   := dashboards/typecheck
NPM_STAMP := $(NPM_DIR)/node_modules/.stamp-installed

$(NPM_STAMP): $(NPM_DIR)/package.json $(NPM_DIR)/package-lock.json
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "Installing Debian's nodejs and npm (missing)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "error: root or sudo is needed to apt-get install nodejs npm; install them" \
	    "yourself, or run 'make unit' (the typecheck then skips)" >&2; exit 1; fi; \
	  if ! command -v apt-get >/dev/null; then echo "error: no apt-get: install node and npm" \
	    "yourself, or run 'make unit'" >&2; exit 1; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    nodejs npm >/dev/null || { echo "error: apt-get install nodejs npm failed" >&2; exit 1; }; \
	fi
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

npm-deps: $(NPM_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -m "not e2e"

test: $(STAMP) $(APT_STAMP) $(NPM_STAMP) lint typecheck check-generated
	$(BIN)/pytest -q

demo: $(STAMP)
	$(PY) -m exporter --demo

bench: $(STAMP)
	$(PY) bench/run.py

# Rules, dashboards and the Kubernetes PrometheusRule are rendered from the monitoring mixin
# (mixin/, jsonnet through the gojsonnet wheel); the output is committed, and `make test` fails
# when it is stale.
generate: $(STAMP)
	$(PY) -m mixin.render
	$(PY) deploy/kubernetes/generate.py
	$(PY) docs/generate_metrics.py

check-generated: $(STAMP)
	$(PY) -m mixin.render --check
	$(PY) deploy/kubernetes/generate.py --check
	$(PY) docs/generate_metrics.py --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info $(NPM_DIR)/node_modules
