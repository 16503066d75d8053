#!/usr/bin/env bash
# The slow tier: tests marked `slow`, run inside a private network namespace (loopback only),
# because the real Milvus 2.3 server they start binds every interface.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv-milvus23/bin/milvus-server ]; then
  # Its own venv: the old `milvus` package must not touch the project's pymilvus.
  "$PYTHON" -m venv .venv-milvus23
  .venv-milvus23/bin/pip install --quiet "milvus==2.3.5"
fi
unshare -n -- bash -c 'ip link set lo up && exec .venv/bin/python -m pytest -m slow "$@"' _ "$@"
