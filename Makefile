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
	@grep -hE '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

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
test: lint debian-deps promtool-test ## lint, alert rules, then the whole test suite against a real PostgreSQL
	PROMTOOL_RULES_CHECKED=1 $(BIN)/pytest $(PYTEST_ARGS)

.PHONY: debian-deps
debian-deps: ## install the Debian packages the tests drive, if missing (promtool, amtool, curl, jq, chromium, pgbouncer)
	@scripts/debian-deps.sh

.PHONY: promtool-test
promtool-test: debian-deps ## check and unit-test the alert rules, check the Alertmanager config
	promtool check rules deploy/prometheus/alerts.yml
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/tests/*.yml
	amtool check-config deploy/prometheus/alertmanager.yml

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

# The Node peers (graphile-worker, pg-boss, and a Node 22 binary), pinned by
# bench/peers/package-lock.json; installed again whenever the lock file changes.
PEERS       := bench/peers
PEERS_STAMP := $(PEERS)/node_modules/.installed-$(shell cat $(PEERS)/package-lock.json | sha1sum | cut -c1-12)

$(PEERS_STAMP): $(PEERS)/package.json $(PEERS)/package-lock.json
	npm ci --prefix $(PEERS) --no-audit --no-fund --loglevel=error
	@rm -f $(PEERS)/node_modules/.installed-* && touch $@

.PHONY: bench-peers
bench-peers: $(PEERS_STAMP) ## install the Node peers of `make bench` from npm (pinned) into bench/peers

.PHONY: bench
bench: $(BENCH_STAMP) $(PEERS_STAMP) ## benchmarks: pgbench, Procrastinate, graphile-worker, pg-boss, engine, API; one table + bench/results.json
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: clean
clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
