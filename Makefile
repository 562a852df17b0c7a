# The two commands a newcomer needs: `make demo` and `make test`. Each sets up what it needs first.
# `make check` is the fast lane (lint, types, import boundaries, unit tests) to run before each commit.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BUF := npx --yes @bufbuild/buf@1.75.0

.PHONY: demo dev test check lint types imports unit proto proto-check configuration configuration-check lock bench chaos \
	setup browser clean

demo: setup browser
	$(VENV)/bin/alerts demo

dev: setup browser
	$(VENV)/bin/alerts dev

test: setup browser proto-check configuration-check lint types imports
	$(VENV)/bin/pytest

check: lint types imports unit

unit: setup
	$(VENV)/bin/pytest tests/unit -q -p no:cacheprovider -n 2

setup: $(INSTALLED)

# Exactly the locked versions, each checked against its hash; then the project itself, which adds nothing.
$(INSTALLED): pyproject.toml requirements/dev.lock
	@echo "==> creating the virtualenv in $(VENV) and installing the project (first run takes a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on --require-hashes -r requirements/dev.lock
	$(PY) -m pip install --progress-bar on --no-deps -e .
	$(PY) -m pip check
	touch $(INSTALLED)

# After changing dependencies in pyproject.toml: re-resolve the lock files (tests/unit/test_lock_files.py
# fails while they do not satisfy pyproject.toml). `--upgrade` moves everything to the newest allowed.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) $(UPGRADE) -o requirements/dev.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra gcs --extra s3 $(LOCK_FLAGS) $(UPGRADE) -o requirements/production.lock
	$(VENV)/bin/uv pip compile requirements/gcs-emulator.in $(LOCK_FLAGS) $(UPGRADE) -o requirements/gcs-emulator.lock

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

# The import contracts in pyproject.toml ([tool.importlinter]).
imports: setup
	$(VENV)/bin/lint-imports

bench: setup browser
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .alerts .pytest_cache .ruff_cache .mypy_cache .hypothesis
