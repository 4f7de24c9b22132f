# CCF task runner: README and CI call these targets verbatim.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys' >/dev/null 2>&1 && echo python3.12 || echo python3.11)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= .ccf/services
SERVICES_ENV := $(RUN_DIR)/env.sh
# torch is named in the same pip call as its dependents so pip cannot pick a different (multi-GB) build.
PIP_SPEC := -e .[dev,ui,ml] torch==2.13.0

.PHONY: help install browser run test test-unit lint bench services-up services-down clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip wheel setuptools
	$(BIN)/python -m pip install $(PIP_SPEC)
	touch $(STAMP)

install: $(STAMP) ## create .venv with pinned dependencies and an editable install

browser: ## Debian's Chromium for the Panel browser test (Playwright drives it; no browser download)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "chromium is missing: run 'sudo apt-get install -y chromium'" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: install ## run the main job on embedded defaults (synthetic venue -> embedded store)
	$(BIN)/python -m bytewax.run flows.features

lint: install ## ruff + mypy --strict on ccf/
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install browser ## start real Kafka/QuestDB/MLflow, lint, run every test tier, stop the services (even on failure)
	@set -euo pipefail; \
	mkdir -p $(RUN_DIR); \
	trap '$(BIN)/ccf services down --run-dir $(RUN_DIR) || true' EXIT; \
	$(BIN)/ccf services up --run-dir $(RUN_DIR) > $(SERVICES_ENV); \
	cat $(SERVICES_ENV); \
	source $(SERVICES_ENV); \
	$(MAKE) --no-print-directory lint; \
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: install ## the pure tests only (no services)
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit ccf $(PYTEST_ARGS)

bench: install ## run the benchmarks; results under benchmarks/results/
	$(BIN)/python -m benchmarks.run

.PHONY: soak
soak: install ## the whole stack (ccf stack) for 30 min at 10x: RSS, lag, lost rows -> benchmarks/results/soak.json
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

.PHONY: faults
faults: install ## the fault suite (tests/faults): every scenario on its own Kafka+QuestDB, figures in benchmarks/results/faults.json
	CCF_FAULTS_FULL=1 $(BIN)/python -m pytest -p no:cacheprovider tests/faults $(PYTEST_ARGS)

services-up: install ## start local Kafka, QuestDB and MLflow; prints export lines
	$(BIN)/ccf services up --run-dir $(RUN_DIR)

services-down: ## stop what services-up started
	$(BIN)/ccf services down --run-dir $(RUN_DIR)

clean: ## remove the venv and run files
	rm -rf $(VENV) .ccf .mypy_cache .ruff_cache
