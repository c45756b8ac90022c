# goodfellaz17 — every target bootstraps what it needs (virtualenv, pip and
# Debian packages), so a fresh clone needs only `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
LOCK   := requirements/dev.lock
# The stamp names what was installed: pyproject.toml and the lock it was
# installed from. Either changing (an edit, `make lock`, a pull) reinstalls.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | sha1sum | cut -c1-12)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

# Exactly the locked versions, each checked against its hash; the package
# itself is built by the locked hatchling, so nothing unpinned is fetched.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade 'pip>=25.3'
	$(PIP) install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-* $(VENV)/.bench-installed-* && touch $@

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

BENCH_LOCK  := requirements/bench.lock
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cat pyproject.toml $(LOCK) $(BENCH_LOCK) | sha1sum | cut -c1-12)

# From its own lock (a superset of dev.lock, the same versions): an unpinned
# install here used to move the dev packages past the lock, unnoticed by
# $(STAMP). $(STAMP) removes this stamp whenever it reinstalls.
$(BENCH_STAMP): $(STAMP) $(BENCH_LOCK)
	$(PIP) install --quiet --require-hashes --no-deps -r $(BENCH_LOCK)
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

UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock'

.PHONY: lock
lock: $(STAMP) ## re-resolve requirements/*.lock to the newest versions pyproject.toml allows (hashed)
	$(UV_COMPILE) --upgrade pyproject.toml --extra dev -o $(LOCK)
	$(UV_COMPILE) pyproject.toml -c $(LOCK) -o requirements/runtime.lock
	$(UV_COMPILE) requirements/build.in -c $(LOCK) -o requirements/build.lock
	$(UV_COMPILE) pyproject.toml --extra dev --extra bench -c $(LOCK) -o $(BENCH_LOCK)

.PHONY: clean
clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
