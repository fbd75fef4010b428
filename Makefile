# Two commands do everything on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= cluster.yaml

.PHONY: up test lint install chromium bench-crdt bench-cluster bench-compare bench-longtail bench-scenarios clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser tests (tests/browser), installed by `make test` when missing
# (about 4 minutes on a fresh machine). Where apt cannot install it (not root, no apt) the browser
# tests skip, and fail under CI=true.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; } \
	  || echo "chromium could not be installed: the browser tests will skip (and fail under CI=true)"; }

up: install
	$(BIN)/likes up --config $(CONFIG)

lint: install
	$(BIN)/ruff check crdt gossip node bench tests
	$(BIN)/mypy

test: lint chromium
	$(BIN)/pytest

bench-crdt: install
	$(BIN)/python -m bench crdt

bench-cluster: install
	$(BIN)/python -m bench cluster

bench-compare: install
	$(BIN)/python -m bench compare

# Issue 19's long tail: one node, 1,000,000 items liked once each (memory, ingest, restart, disk).
bench-longtail: install
	$(BIN)/python -m bench longtail

# Every workload scenario at full size (hot-post alone offers 1,000,000 likes over 5 minutes, twice).
bench-scenarios: install
	$(BIN)/python -m bench scenarios

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
