# fraudhub: `make demo` runs the main job, `make test` the whole test suite.
# Both create the virtual environment .venv on first use (needs python3 >= 3.11
# and the system library libsodium >= 1.0.18).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fraudhub-installed
PYTEST_ARGS ?= -n auto

.PHONY: demo test test-fast lint protos bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/fraudhub demo $(DEMO_ARGS)

# Static checks: style, formatting, types, import contracts (pyproject.toml
# [tool.importlinter]) and module size (tests/check_module_size.py).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python tests/check_module_size.py

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The pure core and unit tests: no servers, no subprocesses, no PostgreSQL.
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not e2e and not postgres"

protos: $(STAMP)
	$(BIN)/python protos/generate.py

bench: $(STAMP)
	$(BIN)/python bench/oprf.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
