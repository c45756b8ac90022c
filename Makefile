# goodfellaz17 — every target bootstraps what it needs (virtualenv, pip and
# Debian packages), so a fresh clone needs only `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv and install the package with its dev tools

.PHONY: demo
demo: $(STAMP) ## deliver a 15,000-unit order end to end on an embedded PostgreSQL
	$(BIN)/goodfellaz17 demo $(DEMO_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff, mypy --strict and the import contracts
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: test
test: lint promtool-test runbook-tools chromium ## lint, alert rules, then the whole test suite against a real PostgreSQL
	PROMTOOL_RULES_CHECKED=1 $(BIN)/pytest $(PYTEST_ARGS)

.PHONY: prometheus-tools
prometheus-tools: ## install promtool and amtool (Debian: prometheus, prometheus-alertmanager) if missing
	@if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "promtool/amtool missing: run 'sudo make prometheus-tools' once" >&2; exit 1; \
	  fi; \
	  echo "installing promtool and amtool (Debian packages prometheus, prometheus-alertmanager)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus prometheus-alertmanager >/dev/null; \
	fi

.PHONY: runbook-tools
runbook-tools: ## install curl and jq (Debian) if missing: docs/RUNBOOK.md's commands use them (psql comes with pgserver)
	@if ! command -v curl >/dev/null || ! command -v jq >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "curl/jq missing: run 'sudo make runbook-tools' once" >&2; exit 1; \
	  fi; \
	  echo "installing curl and jq (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends curl jq >/dev/null; \
	fi

.PHONY: chromium
chromium: ## install Debian's chromium for the console's browser tests if missing (never a downloaded browser)
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "chromium missing: run 'sudo make chromium' once" >&2; exit 1; \
	  fi; \
	  echo "installing chromium (Debian package) for the console's browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium fonts-dejavu-core >/dev/null; \
	fi

.PHONY: promtool-test
promtool-test: prometheus-tools ## check and unit-test the alert rules, check the Alertmanager config
	promtool check rules deploy/prometheus/alerts.yml
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/tests/*.yml
	amtool check-config deploy/prometheus/alertmanager.yml

# A separate prerequisite line, so the `test` rule above stays as it is.
test: pgbouncer

.PHONY: pgbouncer
pgbouncer: ## install PgBouncer (Debian) for the pooler compatibility test, if missing
	@if ! PATH="$$PATH:/usr/sbin" command -v pgbouncer >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing pgbouncer (Debian package) for tests/e2e/test_pgbouncer.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends pgbouncer >/dev/null \
	    || echo "pgbouncer could not be installed: its test will say so and skip" >&2; \
	  else \
	    echo "pgbouncer missing and not root: 'sudo make pgbouncer' once, or its test skips" >&2; \
	  fi; \
	fi

.PHONY: k8s-rules
k8s-rules: $(STAMP) ## rebuild deploy/k8s/prometheusrule.yaml from deploy/prometheus/alerts.yml
	$(BIN)/python deploy/k8s/build_prometheusrule.py

.PHONY: fmt
fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format src tests bench deploy
	$(BIN)/ruff check --fix src tests bench deploy

BENCH_STAMP := $(VENV)/.bench-installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@rm -f $(VENV)/.bench-installed-* && touch $@

.PHONY: bench
bench: $(BENCH_STAMP) ## benchmarks: pgbench limit, Procrastinate, engine, API; one table + bench/results.json
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: clean
clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
