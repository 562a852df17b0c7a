# The two commands a newcomer needs: `make demo` and `make test`. Each sets up what it needs first.
# `make check` is the fast lane (lint, types, unit tests) to run before each commit.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BUF := npx --yes @bufbuild/buf@1.75.0

.PHONY: demo dev test check lint types unit proto proto-check configuration configuration-check bench chaos \
	setup browser clean

demo: setup browser
	$(VENV)/bin/alerts demo

dev: setup browser
	$(VENV)/bin/alerts dev

test: setup browser proto-check configuration-check lint types
	$(VENV)/bin/pytest

check: lint types unit

unit: setup
	$(VENV)/bin/pytest tests/unit -q -p no:cacheprovider

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@echo "==> creating the virtualenv in $(VENV) and installing the project (first run takes a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	touch $(INSTALLED)

browser: setup
	@bash scripts/ensure_chromium.sh $(PY)

proto:
	$(PY) proto/generate.py
	$(PY) proto/document.py
	$(BUF) lint

proto-check: setup
	@bash scripts/ensure_node.sh
	$(PY) proto/generate.py --check
	$(PY) proto/document.py --check
	$(BUF) lint
	BUF='$(BUF)' bash scripts/proto_breaking.sh

# docs/configuration.md and mesh/setting_names.py, from the settings classes.
configuration: setup
	$(PY) scripts/configuration_reference.py

configuration-check: setup
	$(PY) scripts/configuration_reference.py --check

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: setup
	$(VENV)/bin/mypy

bench: setup browser
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .alerts .pytest_cache .ruff_cache .mypy_cache .hypothesis
