# The two commands the README gives: `make run` and `make test`. Everything else supports them.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# Django 6.1 needs Python 3.12 or newer: take the first one found (pyenv versions included).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.14 $$HOME/.pyenv/versions/3.13*/bin/python3 $$HOME/.pyenv/versions/3.12*/bin/python3 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench venv lock clean cluster

# Installs come from the lock files, exact versions with their hashes (`make lock` writes them
# from pyproject.toml's ranges). Running needs requirements.txt and the project itself (the
# `stackblaze` command, to script the dashboard it starts); the tests, lint and the benchmarks
# add requirements-dev.txt.
$(VENV)/.runtime: requirements.txt pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "Python 3.12 or newer is required (set PYTHON=/path/to/python3.12)." >&2; exit 1; fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.dev

LOCK := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-trusted-host --no-emit-find-links
lock: $(VENV)/.dev
	$(LOCK) --output-file requirements.txt pyproject.toml
	$(LOCK) --extra dev --output-file requirements-dev.txt pyproject.toml

run: export DJANGO_DEBUG ?= true
run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py seed_demo
	@echo
	@echo "Dashboard: http://$(HOST):$(PORT)/  (a worker applies changes to $${MANIFESTS_DIR:-var/manifests}; Ctrl-C stops both)"
	@echo "Command line: $(BIN)/stackblaze login --url http://$(HOST):$(PORT) --token …  (a token from the API tokens page)"
	@echo
	HOST=$(HOST) PORT=$(PORT) scripts/run-dev.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

# The test cluster (Kubernetes, etcd, CoreDNS, kube-router, images), built once per machine and
# cached; a warm run takes a second.
cluster:
	scripts/test-cluster/build.sh >/dev/null

test: venv lint cluster
	@if [ -z "$$DATABASE_URL" ]; then echo "DATABASE_URL is not set: the tests run on SQLite (CI runs them on PostgreSQL)."; fi
	$(BIN)/pytest --numprocesses=auto --durations=25

bench: venv cluster
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
