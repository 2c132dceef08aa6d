# The front door: `make demo` runs Stockgraph locally; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint typecheck imports unit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/stockgraph demo

lint: install
	$(BIN)/ruff check stockgraph tests benchmarks
	$(BIN)/ruff format --check stockgraph tests benchmarks

typecheck: install
	$(BIN)/mypy

imports: install
	$(BIN)/lint-imports

test: lint typecheck imports
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .stockgraph-demo .mypy_cache .pytest_cache .ruff_cache
