# Two commands set everything up: `make demo` and `make test`. Both are idempotent, and both
# install exactly the versions in requirements/*.txt (hashes checked), with nothing but pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The lock is installed as it is: no index look-up decides a version, no build backend is fetched
# (hatchling is in the lock, so the project is built without build isolation).
PIP = $(1)/bin/python -m pip install -q --disable-pip-version-check
LOCKED = $(call PIP,$(1)) --require-hashes --no-deps -r
PROJECT = $(call PIP,$(1)) --no-deps --no-build-isolation
UV_COMPILE := .venv-lock/bin/uv pip compile -q --universal --generate-hashes --upgrade \
	--python-version 3.10 pyproject.toml requirements/build.in

.PHONY: demo test test-plain test-latest test-model lint docs dist lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Editable installs are not byte-compiled by pip; compile once so every `runner` start does not
# compile the package again (PYTHONDONTWRITEBYTECODE would otherwise make that permanent).
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements/demo.txt
	$(call LOCKED,$(VENV)) requirements/demo.txt
	$(call PROJECT,$(VENV)) -e .
	$(BIN)/python -m compileall -q pipeline_runner > /dev/null
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml requirements/dev.txt \
		plugins/runner-sqlite/pyproject.toml
	$(call LOCKED,$(VENV)) requirements/dev.txt
	$(call PROJECT,$(VENV)) -e . -e plugins/runner-sqlite
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

# The manual: a broken link or anchor fails the build.
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# The sdist and wheels a release would publish, checked as the package index checks them.
dist: $(VENV)/.installed-dev
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist . > /dev/null
	$(BIN)/python -m build --no-isolation --outdir dist plugins/runner-sqlite > /dev/null
	$(BIN)/twine check --strict dist/*

# The suite runs on TEST_JOBS pytest-xdist workers (2: CI's cores); much of a test is waiting for
# the processes it starts. Tests marked xdist_group(NAME) share a worker (and its fixtures).
TEST_JOBS ?= 2
PYTEST_JOBS = -n $(TEST_JOBS) --dist loadgroup

test: $(VENV)/.installed-dev lint docs dist
	$(BIN)/python tests/ensure_graphviz.py
	$(BIN)/python -m compileall -q pipeline_runner > /dev/null
	$(BIN)/pytest -q $(PYTEST_JOBS)
	$(MAKE) --no-print-directory test-plain

# The plain paths: the engine, chain, wire, scheduler, reference-model and resume tests again with every
# speed shortcut off (PIPELINE_RUNNER_NO_SHORTCUTS=1: no compiled schema check, no chains, one pickle per
# message, one Dask task per attempt), so the version each shortcut stands in for stays correct.
test-plain: $(VENV)/.installed-dev
	PIPELINE_RUNNER_NO_SHORTCUTS=1 RUNNER_MODEL_EXAMPLES=$${RUNNER_MODEL_EXAMPLES:-15} $(BIN)/pytest -q \
		$(PYTEST_JOBS) -p no:cacheprovider tests/test_engine.py tests/test_chains.py tests/test_wire.py \
		tests/test_journal.py tests/test_scheduler_unit.py tests/test_model.py tests/test_dask.py \
		tests/test_resume_semantics.py

# The reference-model test with a longer budget (`make test` tries about 100 pipelines in a
# minute): RUNNER_MODEL_EXAMPLES pipelines, 500 unless set.
test-model: $(VENV)/.installed-dev
	RUNNER_MODEL_EXAMPLES=$${RUNNER_MODEL_EXAMPLES:-500} $(BIN)/pytest tests/test_model.py -q -s

# The same suite against the newest release of every dependency (version ranges from
# pyproject.toml, nothing locked), in a venv of its own: drift is seen here before users see it.
test-latest:
	$(PYTHON) -m venv .venv-latest
	$(call PIP,.venv-latest) --upgrade --upgrade-strategy eager -r requirements/build.in \
		-e '.[dev,docs]' -e plugins/runner-sqlite
	.venv-latest/bin/python tests/ensure_graphviz.py
	.venv-latest/bin/pytest -q $(PYTEST_JOBS)

# Update the lock to the newest releases the version ranges allow (one command; commit the result).
lock:
	test -x .venv-lock/bin/uv || ($(PYTHON) -m venv .venv-lock && $(call PIP,.venv-lock) 'uv>=0.5')
	UV_CUSTOM_COMPILE_COMMAND="make lock" $(UV_COMPILE) -o requirements/demo.txt
	UV_CUSTOM_COMPILE_COMMAND="make lock" $(UV_COMPILE) --extra dev --extra docs -o requirements/dev.txt

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py --only all

clean:
	rm -rf $(VENV) .venv-latest .venv-lock .runner site dist .pytest_cache .mypy_cache .ruff_cache
