# The two set-up commands: `make run` (the service) and `make test` (the checks).
# Both create .venv on first use and reinstall when either pyproject.toml changes. Both
# install the product, then the sandbox beside it (sandbox/: its own distribution, never in
# the product wheel or the image).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest diagram clean env-example

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml sandbox/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m pip install -q -e sandbox
	touch $@

$(VENV)/.installed-dev: pyproject.toml sandbox/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q -e sandbox
	touch $@ $(VENV)/.installed-run

# With Slack credentials (environment or .env) it serves Slack; without, the sandbox.
run: $(VENV)/.installed-run
	@if [ -n "$$SLACK_BOT_TOKEN" ] || grep -Eqs '^[[:space:]]*(export[[:space:]]+)?SLACK_BOT_TOKEN=[[:space:]]*["'"'"']?[^[:space:]#"'"'"']' .env; then \
		exec $(BIN)/jitaccess serve; \
	else \
		echo "make run: no SLACK_BOT_TOKEN in the environment or .env, so this is the sandbox: a local Slack stand-in in your browser"; \
		exec $(BIN)/jitaccess serve --sandbox; \
	fi

test: $(VENV)/.installed-dev lint typecheck pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src sandbox tests bench
	$(BIN)/ruff format --check src sandbox tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

diagram: $(VENV)/.installed-run
	$(BIN)/jitaccess diagram --format mermaid

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist src/*.egg-info sandbox/build sandbox/src/*.egg-info

env-example: $(VENV)/.installed-run
	$(BIN)/python -c "from jitaccess.settings import env_example; print(env_example(), end='')" > .env.example
