# The two commands a new machine needs: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UTRACE := $(VENV)/bin/utrace
PYTEST_ARGS ?=

.PHONY: setup demo test unit e2e lint bench clean

setup:
	@scripts/setup.sh --fixtures

demo: setup
	@scripts/demo.sh

# pytest exits 5 when it collected no test: a green run must have run tests, so that is a failure.
test: setup lint
	@$(PY) -m pytest -q -ra $(PYTEST_ARGS) tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

unit: setup
	@$(PY) -m pytest -q tests/unit

e2e: setup
	@$(PY) -m pytest -q -ra tests/e2e

lint:
	@$(VENV)/bin/ruff check utrace tests bench
	@$(VENV)/bin/ruff format --check utrace tests bench
	@$(VENV)/bin/mypy --strict utrace

bench: setup
	@$(PY) bench/run.py

clean:
	rm -rf $(VENV) fixtures/build .pytest_cache .mypy_cache .ruff_cache
