# Concord: two commands for a newcomer — `make demo` and `make test`.
# Each installs what it needs (idempotently, keyed on the lock files), then runs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
BIN    := node_modules/.bin
TOPLOC := toploc==0.1.6

export PYTHONHASHSEED := 0

.PHONY: deps demo test forge-test forge-deep pytest pytest-fast slither bench-gas bench-learn bench-proofs clean

deps: $(VENV)/.stamp node_modules/.stamp

# Python: exact versions from requirements.lock. torch comes from the CPU wheel on disk.
# toploc is built from its sdist against that torch: its wheel fails to import (ABI).
$(VENV)/.stamp: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -c "import toploc" 2>/dev/null || $(PIP) install --quiet --no-binary toploc --no-build-isolation $(TOPLOC)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@

# npm: anvil, forge, solc (wasm), js-ipfs, OpenZeppelin, forge-std — pinned by package-lock.json.
# --ignore-scripts: every binary we use ships inside its package; the scripts would only
# re-fetch them (npm 10 runs them, npm 11 does not), so skipping them keeps both alike.
node_modules/.stamp: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

demo: deps
	$(VENV)/bin/concord demo

test: forge-test pytest

forge-test: node_modules/.stamp
	$(BIN)/forge test

forge-deep: node_modules/.stamp
	FOUNDRY_PROFILE=deep $(BIN)/forge test

pytest: deps
	$(PY) -m pytest -q

pytest-fast: deps
	$(PY) -m pytest -q -m "not slow"

slither: deps
	$(VENV)/bin/slither . --compile-force-framework foundry --foundry-compile-all

bench-gas: deps
	$(VENV)/bin/concord bench gas

bench-learn: deps
	$(VENV)/bin/concord bench learn

bench-proofs: deps
	$(VENV)/bin/concord bench proofs

clean:
	rm -rf out cache .cache .pytest_cache
