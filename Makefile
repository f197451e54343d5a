# Two commands set everything up: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Editable installs are not byte-compiled by pip; compile once so every `runner` start does not
# compile the package again (PYTHONDONTWRITEBYTECODE would otherwise make that permanent).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	$(BIN)/python -m compileall -q pipeline_runner > /dev/null
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml plugins/runner-sqlite/pyproject.toml
	$(BIN)/pip install -q -e '.[dev]' -e plugins/runner-sqlite
	$(BIN)/python -m compileall -q pipeline_runner > /dev/null
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/runner validate pipelines/hello.yaml
	$(BIN)/runner graph pipelines/hello.yaml
	$(BIN)/runner run pipelines/hello.yaml --state-dir .runner

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy pipeline_runner

test: $(VENV)/.installed-dev lint
	$(BIN)/python tests/ensure_graphviz.py
	$(BIN)/python -m compileall -q pipeline_runner > /dev/null
	$(BIN)/pytest -q

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .runner .pytest_cache .mypy_cache .ruff_cache
