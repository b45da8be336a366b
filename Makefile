# The two commands a newcomer needs: `make run` (the whole system) and `make test` (the whole suite).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test check bench serve worker clean system-packages-test system-packages-run

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# Independent implementations (npm) the end-to-end tests check jobcast against, and the browser packages
# (clients/js, clients/react) installed as an app installs them: again whenever they change.
NODE_DEPS := tests/e2e/node/node_modules/.installed

$(NODE_DEPS): tests/e2e/node/package-lock.json $(wildcard clients/js/* clients/react/*) | system-packages-test
	npm ci --prefix tests/e2e/node --no-audit --no-fund --loglevel=error
	touch $@

# Debian packages (redis-server, chromium, npm), installed when missing: scripts/system-packages says how.
system-packages-test:
	@scripts/system-packages test

system-packages-run:
	@scripts/system-packages run

## run: API + 2 workers + a private Redis (REDIS_URL if set), at http://127.0.0.1:8000/
run: system-packages-run $(VENV)/.installed
	$(BIN)/jobcast dev

## test: type check, then every unit and end-to-end test (installs redis-server, chromium and npm if missing)
test: system-packages-test $(VENV)/.installed $(NODE_DEPS) check
	$(BIN)/python -m pytest

check: $(VENV)/.installed
	$(BIN)/mypy
	$(BIN)/ruff check .

## bench: every benchmark beside its raw baseline (a few minutes; docs/benchmarks.md has the figures)
bench: $(VENV)/.installed
	$(BIN)/python -m bench

serve: $(VENV)/.installed
	$(BIN)/jobcast serve

worker: $(VENV)/.installed
	$(BIN)/python worker.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
