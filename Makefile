# Every target installs what it needs: a fresh Debian/Ubuntu machine with git, Python 3.11+ and
# make is enough. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.stamp-installed
APT_STAMP := $(VENV)/.stamp-apt

.PHONY: help venv system-deps lint typecheck unit test demo bench generate check-generated clean

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

# Real Prometheus, promtool and Alertmanager from Debian, for the end-to-end tests. A
# policy-rc.d that exits 101 keeps the packages from starting their own daemons on 9090/9093.
$(APT_STAMP): | $(STAMP)
	@if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; $$SUDO chmod 0755 /usr/sbin/policy-rc.d; }; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; \
	fi
	touch $@

system-deps: $(APT_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -m "not e2e"

test: $(STAMP) $(APT_STAMP) lint typecheck
	$(BIN)/pytest -q

demo: $(STAMP)
	$(PY) -m exporter --demo

bench: $(STAMP)
	$(PY) bench/run.py

# Rules, dashboards and the Kubernetes PrometheusRule are generated from code; the output is
# committed, and `make test` fails when it is stale.
generate: $(STAMP)
	$(PY) -m alerts.generate
	$(PY) -m dashboards.generate
	$(PY) deploy/kubernetes/generate.py

check-generated: $(STAMP)
	$(PY) -m alerts.generate --check
	$(PY) -m dashboards.generate --check
	$(PY) deploy/kubernetes/generate.py --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
