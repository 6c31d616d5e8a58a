# Every target runs from a fresh clone: `make setup` is idempotent and cheap when nothing changed.
# It compiles what it installs to bytecode (`--compile-bytecode`), so a worker start does not.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed

.PHONY: setup check test test-fast lint typecheck fmt protos stack demo bench clean worker stub

setup: $(STAMP)

$(STAMP): requirements-dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes --compile-bytecode \
		-r requirements-dev.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $(STAMP)

check: setup lint typecheck test

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd apis && ../$(BIN)/buf lint

typecheck: setup
	$(BIN)/mypy

# `-rs`: every skipped test says why (no bubblewrap, no Docker...), so a green run hides nothing.
test: setup
	$(BIN)/pytest -q -rs

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

protos: setup
	$(BIN)/python apis/generate.py

stack: setup
	$(BIN)/devstack up

worker: setup
	./run.sh

stub: setup
	$(BIN)/stigmer-stub

# `make demo DEMO_ARGS=--keep` leaves everything running to browse the Temporal UI.
DEMO_ARGS ?=
demo: setup
	$(BIN)/python -m stigmer_cli.demo $(DEMO_ARGS)

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
