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
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

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
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: test
test: lint ## lint, then the whole test suite against a real PostgreSQL
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: fmt
fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

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
