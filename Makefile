# Every target installs what it needs: a fresh Debian/Ubuntu machine with git, Python 3.11+ and
# make is enough. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.stamp-installed
RUNTIME_STAMP := $(VENV)/.stamp-runtime
APT_STAMP := $(VENV)/.stamp-apt
VENV_CFG  := $(VENV)/pyvenv.cfg

# `make demo` options: DEMO_PORT (default 9907), DEMO_PROFILE (the simulator's workload: demo,
# steady, bench or quiet; default demo) and ARGS (any exporter flags, e.g.
# ARGS=--web.config.file=web/web-config.yml). `make demo-stack` takes ARGS too (--help lists them).
DEMO_PORT    ?=
DEMO_PROFILE ?=
ARGS         ?=

.PHONY: help venv system-deps npm-deps lint typecheck unit test demo demo-stack bench bench-scale generate check-generated clean

help:
	@echo "make demo    start the simulator and the exporter against it (DEMO_PORT=, DEMO_PROFILE=, ARGS=)"
	@echo "make demo-stack  the demo with Prometheus (the project's alert rules) and Alertmanager"
	@echo "make test    lint, type-check and run every test (installs what it needs)"
	@echo "make bench   compare this exporter with a naive official-SDK poller"
	@echo "             (beside: BEFORE=figures.json, an earlier run's --json figures;"
	@echo "              default bench/before-issue13.json, the version before issue 13)"
	@echo "make bench-scale  300 targets x 1,000 results in one exporter process, against the goals"

$(VENV_CFG):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV_CFG)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(RUNTIME_STAMP)

# The demo needs only the runtime dependencies (a few seconds), not the test toolchain.
$(RUNTIME_STAMP): pyproject.toml | $(VENV_CFG)
	$(PY) -m pip install --quiet -e .
	touch $@

venv: $(STAMP)

# Real Prometheus, promtool and Alertmanager from Debian, for the end-to-end tests (without them
# those tests skip). Installed only when one of the binaries is missing, as root or with sudo.
# While apt runs, a policy-rc.d that exits 101 keeps the packages from starting their own daemons
# on 9090/9093; it is removed afterwards unless it was there before. The systemd units the
# packages enable are disabled again, so nothing starts at the next boot either.
E2E_BINARIES := prometheus promtool prometheus-alertmanager amtool
POLICY_RC_D  ?= /usr/sbin/policy-rc.d

$(APT_STAMP): | $(VENV_CFG)
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
	  if command -v systemctl >/dev/null; then for unit in prometheus prometheus-alertmanager; do \
	    $$SUDO systemctl disable --quiet $$unit.service 2>/dev/null || true; done; fi; \
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

demo: $(RUNTIME_STAMP)
	$(PY) -m exporter --demo $(if $(DEMO_PORT),--web.listen-address=127.0.0.1:$(DEMO_PORT)) \
	  $(if $(DEMO_PROFILE),--demo.profile=$(DEMO_PROFILE)) $(ARGS)

# The simulator, the exporter, Prometheus with alerts/*.rules.yml and Alertmanager, on loopback
# with free ports, until Ctrl-C. Prometheus and Alertmanager are Debian's, as for `make test`.
demo-stack: $(RUNTIME_STAMP) $(APT_STAMP)
	$(PY) -m demo.stack $(ARGS)

BEFORE ?= bench/before-issue13.json
bench: $(STAMP)
	$(PY) bench/run.py --before $(BEFORE)

# 300 targets x 1,000 results in one exporter process (issue 13): ready time, steady-cycle CPU,
# /metrics CPU and peak RSS, each against its goal (beside: BEFORE_SCALE=figures.json).
BEFORE_SCALE ?= bench/before-issue13-scale.json
bench-scale: $(RUNTIME_STAMP)
	$(PY) bench/scale.py $(if $(BEFORE_SCALE),--before $(BEFORE_SCALE))

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
