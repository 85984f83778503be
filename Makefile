# Every target sets itself up: a fresh machine needs only python3 (>= 3.11) and make.
# Everything is installed from the lock (requirements/*.txt, exported from uv.lock, with hashes):
# the same versions today and in a year, and the same ones the container image ships.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check --quiet
TIMED  := tools/timed
PYTEST_ARGS ?=
IMAGE_TEST_ARGS ?=
# The demo needs only the runtime; the tests and the checkers come on top (dev).
RUNTIME := $(VENV)/.runtime-installed
DEV     := $(VENV)/.dev-installed

.PHONY: demo test check lint typecheck unit integration e2e image-test bench lock clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found %s); set PYTHON=..." % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# --no-build-isolation: the project is built with the locked setuptools, not today's.
$(RUNTIME): $(BIN)/python pyproject.toml requirements/runtime.txt requirements/build.txt
	$(PIP) install --require-hashes -r requirements/build.txt -r requirements/runtime.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $@

$(DEV): $(RUNTIME) requirements/dev.txt bench/pyproject.toml
	$(PIP) install --require-hashes -r requirements/build.txt -r requirements/dev.txt
	$(PIP) install --no-deps --no-build-isolation -e . -e ./bench
	@touch $@

demo: $(RUNTIME)
	$(BIN)/connector demo

test: $(DEV)
	@$(TIMED) lint $(MAKE) --no-print-directory lint
	@$(TIMED) typecheck $(MAKE) --no-print-directory typecheck
	@$(TIMED) tests $(BIN)/python -m pytest -q --ignore=tests/image $(PYTEST_ARGS)
	@$(TIMED) image-test $(MAKE) --no-print-directory image-test

check: lint typecheck

lint: $(DEV)
	$(BIN)/ruff check connector bench tests docs/recipes
	$(BIN)/ruff format --check connector bench tests docs/recipes

typecheck: $(DEV)
	$(BIN)/mypy

unit: $(DEV)
	$(BIN)/python -m pytest -q tests/unit

integration: $(DEV)
	$(BIN)/python -m pytest -q tests/integration tests/faults

e2e: $(DEV)
	$(BIN)/python -m pytest -q tests/e2e

# The container image built and run for real, and deploy/compose.yaml brought up, on a private
# Docker engine (needs root; installs Debian's docker.io when missing; see docs/deploy.md).
# Skips (with the reason) where it cannot run; -rfEsx prints skip and xfail reasons.
image-test: $(DEV)
	$(BIN)/python -m pytest -q -rfEsx tests/image $(IMAGE_TEST_ARGS)

bench: $(DEV)
	$(BIN)/connector bench

# After editing dependencies in pyproject.toml (needs the package index); UPGRADE=1 refreshes
# every pin to the newest allowed release.
lock: $(DEV)
	UV=$(BIN)/uv tools/lock $(if $(UPGRADE),--upgrade)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info bench/*.egg-info
