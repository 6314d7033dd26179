# deploystack — `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
DEMO := blueprints/default/deploystack.yaml
PYTEST := $(BIN)/python -m pytest

.PHONY: help venv engine demo down test unit e2e swarm cluster cluster-down cluster-test lint bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/deploystack: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/deploystack ## make .venv with deploystack and the test tools

engine: ## make sure a Docker engine answers (installs docker.io and starts dockerd if needed; root)
	@scripts/engine.sh start

demo: venv engine ## build the images and bring up the default blueprint
	$(BIN)/deploystack up -f $(DEMO)
	@echo "demo: https://127.0.0.1:8443/ (self-signed certificate); stop it with make down"

down: venv ## stop the demo stack (volumes kept), and an engine that make started
	$(BIN)/deploystack down -f $(DEMO)
	@scripts/engine.sh stop

test: venv ## unit, one-role integration (testcontainers), end-to-end, then Docker Swarm tests on a real engine
	@scripts/engine.sh start
	@status=0; $(PYTEST) tests/unit && $(PYTEST) tests/integration && $(PYTEST) tests/e2e \
	  && $(PYTEST) tests/swarm || status=$$?; \
	  scripts/engine.sh stop; exit $$status

# A swarm test may make a swarm and leave it, which drops the DNS records of bridge-network containers:
# never run it beside a Compose stack (make test runs it last, after the e2e stacks are gone).
swarm: venv engine ## the Docker Swarm tests alone (single-node swarm made and left by the tests)
	$(PYTEST) tests/swarm

# The cluster's swarm lives in Docker-in-Docker nodes: the host's engine never joins it (docs/swarm.md).
cluster: engine ## a 3-node Docker-in-Docker swarm with a registry on this machine (DOCKER_HOST it prints)
	@scripts/cluster.sh up

cluster-down: ## remove what make cluster made (containers, volumes, network)
	@scripts/cluster.sh down

cluster-test: venv engine ## multi-node swarm tests on a cluster of their own (made and removed by the tests)
	$(PYTEST) tests/cluster

unit: venv ## unit tests only (no Docker; installs graphviz for the diagram tests if missing)
	@scripts/engine.sh packages
	$(PYTEST) tests/unit

lint: venv ## ruff, mypy and the import-linter layer contracts
	$(BIN)/ruff check deploystack tests
	$(BIN)/mypy deploystack
	$(BIN)/lint-imports --no-cache

bench: venv engine ## benchmarks (not in CI): tables printed, JSON in bench-results/
	$(PYTEST) tests/bench -s

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
