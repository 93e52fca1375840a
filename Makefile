# opsplane: `make run` brings the whole stack up on embedded servers; `make test` runs everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export XDG_RUNTIME_DIR ?= $(CURDIR)/.opsplane/xdg

.PHONY: run test lint typecheck unit bench clean help

help:
	@echo "make run   - create $(VENV), install, start the stack with a demo app (opsctl up --demo)"
	@echo "make test  - create $(VENV), install, lint, type-check and run the whole test suite"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install only when the project's metadata changes.
$(VENV)/.installed-local: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,test]'
	touch $@ $(VENV)/.installed-local

$(XDG_RUNTIME_DIR):
	mkdir -p -m 700 $@

run: $(VENV)/.installed-local | $(XDG_RUNTIME_DIR)
	$(BIN)/opsctl up --demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy shared services opsctl

test: $(VENV)/.installed-test lint typecheck | $(XDG_RUNTIME_DIR)
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .opsplane .pytest_cache .mypy_cache .ruff_cache
