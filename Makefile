# deploystack — `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
DEMO := blueprints/default/deploystack.yaml
PYTEST := $(BIN)/python -m pytest
# the slowest tests of each suite, in the CI log: where its time goes
SLOWEST := --durations=15

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

# The swarm tests run on Docker-in-Docker nodes (tests/cluster/cluster.py, one cluster for both folders):
# the host's engine never joins a swarm, so they run beside the end-to-end tests' Compose stacks, in the
# background (their output follows the e2e tests'); SWARM_BESIDE_E2E=0 runs them after tests/e2e instead.
# Both always finish (and remove their cluster) before the engine is stopped.
SWARM_TESTS := tests/swarm tests/cluster
SWARM_LOG := .swarm-tests.log
SWARM_BESIDE_E2E ?= 1
# End-to-end modules with a stack of their own (no shared one): after the swarm tests, in the same
# background lane, so that CI's two lanes take about as long as each other.
E2E_BESIDE := tests/e2e/test_disaster_drill.py tests/e2e/test_media_backups.py tests/e2e/test_backups.py \
  tests/e2e/test_offsite_patroni.py

test: venv ## unit, one-role integration (testcontainers), then end-to-end beside the multi-node swarm tests
	@scripts/engine.sh start
	@status=0; $(PYTEST) tests/unit && $(PYTEST) tests/integration || status=$$?; \
	  if [ $$status = 0 ] && [ "$(SWARM_BESIDE_E2E)" = 1 ]; then \
	    { s=0; $(PYTEST) $(SLOWEST) -p no:cacheprovider $(SWARM_TESTS) || s=$$?; \
	      $(PYTEST) $(SLOWEST) -p no:cacheprovider $(E2E_BESIDE) || s=$$((s ? s : $$?)); exit $$s; } \
	      >$(SWARM_LOG) 2>&1 & swarm=$$!; \
	    $(PYTEST) $(SLOWEST) tests/e2e $(addprefix --ignore=,$(E2E_BESIDE)) || status=$$?; \
	    wait $$swarm || status=$$((status ? status : $$?)); \
	    echo "== $(SWARM_TESTS), then $(E2E_BESIDE) (run beside tests/e2e) =="; cat $(SWARM_LOG); \
	  elif [ $$status = 0 ]; then \
	    $(PYTEST) $(SLOWEST) tests/e2e && $(PYTEST) $(SWARM_TESTS) || status=$$?; \
	  fi; \
	  scripts/engine.sh stop; exit $$status

swarm: venv engine ## the Docker Swarm tests alone, on a Docker-in-Docker cluster they make (safe beside stacks)
	$(PYTEST) $(SWARM_TESTS)

# The cluster's swarm lives in Docker-in-Docker nodes: the host's engine never joins it (docs/swarm.md).
cluster: engine ## a 3-node Docker-in-Docker swarm with a registry on this machine (DOCKER_HOST it prints)
	@scripts/cluster.sh up

cluster-down: ## remove what make cluster made (containers, volumes, network)
	@scripts/cluster.sh down

cluster-test: venv engine ## tests/cluster alone, on a cluster of their own (made and removed by the tests)
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
