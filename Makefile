# pursestrings: `make run` and `make test` are all a new machine needs. `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
export PURSESTRINGS_ENV_FILE ?= $(CURDIR)/.state/local.env
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON_BIN) >/dev/null || { echo "need $(PYTHON_BIN) on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	@$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with the pinned dependencies

.PHONY: kafka-lib
kafka-lib: ## assemble the Kafka broker jars from Maven Central (once)
	@deploy/kafka/kafka.sh fetch

.PHONY: infra-up
infra-up: venv kafka-lib ## start (or reuse) Kafka and PostgreSQL; waits until both answer
	@deploy/infra.sh up

.PHONY: infra-down
infra-down: ## stop Kafka and PostgreSQL; leaves no process behind
	@deploy/infra.sh down

.PHONY: infra-status
infra-status: ## say whether Kafka and PostgreSQL are running
	@deploy/infra.sh status

.PHONY: migrate
migrate: infra-up ## apply pending SQL migrations (schemas/sql/)
	@$(PY) -m services.cli migrate

.PHONY: schemas
schemas: venv ## export the contracts' JSON Schemas into schemas/json/
	@$(PY) -m schemas.export

.PHONY: docs
docs: venv ## regenerate docs/api/ (the gateway's OpenAPI, the topics' AsyncAPI) and schemas/json/
	@$(PY) -m services.docs
	@$(PY) -m schemas.export

.PHONY: check
check: venv ## ruff format + lint, mypy --strict
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy

.PHONY: format
format: venv ## rewrite files with ruff format and safe fixes
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

.PHONY: test
test: venv kafka-lib ## the whole suite on real Kafka and PostgreSQL (starts and stops them)
	@deploy/run-tests.sh $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: venv ## unit tests only: no services, seconds
	@$(VENV)/bin/pytest -m "unit and not slow" $(PYTEST_ARGS)

.PHONY: run
run: venv kafka-lib ## Kafka, PostgreSQL and every service, until Ctrl-C
	@deploy/run.sh

.PHONY: stop
stop: ## stop what `make run` started (from another terminal)
	@deploy/stop.sh

.PHONY: chaos
chaos: infra-up ## seeded chaos run (SEED=n SECONDS=s; EVENTS=100000 for the long one): services under faults, judged by an oracle
	@$(PY) -m chaos $(if $(SEED),--seed $(SEED)) $(if $(SECONDS),--seconds $(SECONDS)) $(if $(EVENTS),--events $(EVENTS) --wallets $(or $(WALLETS),500) --rate $(or $(RATE),120) --fault-every $(or $(FAULT_EVERY),15) --report-every 60 $(if $(SECONDS),,--seconds 1500))

.PHONY: soak
soak: infra-up ## long steady run with periodic faults, memory printed each minute (MINUTES=30; not in CI)
	@$(PY) -m chaos --seconds $$(( $(or $(MINUTES),30) * 60 )) --rate 40 --fault-every 30 --report-every 60 $(if $(SEED),--seed $(SEED))

.PHONY: bench
bench: infra-up ## benchmarks under bench/, results in bench/results/ (needs Kafka and Postgres)
	@$(PY) -m bench

.PHONY: clean-state
clean-state: infra-down ## delete Kafka and PostgreSQL data (keeps the fetched jars)
	@find .state -mindepth 1 -maxdepth 1 ! -name kafka-lib -exec rm -rf {} +
