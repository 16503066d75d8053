"""Slow tier: the embedded Milvus engine on a CPU older than this one. The pinned x86_64 build is
compiled for SSE4.2 (x86-64-v2) and picks AVX2/AVX-512 kernels at run time (faiss/knowhere), so it
must run everything stackrag asks of it on a CPU without AVX at all: here under qemu-user as a
Nehalem (2008; SSE4.2, no AVX). qemu refuses AVX instructions for that model, so an AVX instruction
outside a run-time check would end the engine with SIGILL (docs/milvus-servers.md)."""

from __future__ import annotations

import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from milvus_servers import free_port, wait_for_milvus

pytestmark = pytest.mark.slow
OLD_CPU = "Nehalem-v1"


def test_the_engine_runs_without_avx(tmp_path: Path):
    if platform.machine() != "x86_64":
        pytest.skip("the x86_64 build is the one with run-time dispatch to check here")
    qemu = shutil.which("qemu-x86_64")
    assert qemu, "qemu-x86_64 is missing: `make test-slow` installs Debian's qemu-user"
    from stackrag.providers.protocols import SearchRequest, StoredRow
    from stackrag.providers.vector_io.milvus import MilvusIndex
    from stackrag.providers.vector_io.milvus_engine import engine_environment, locate_engine

    files = locate_engine()
    port = free_port()
    log = tmp_path / "engine.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([qemu, "-cpu", OLD_CPU, str(files.executable), str(tmp_path / "milvus.db"),
                                    f"127.0.0.1:{port}", "ERROR"], env=engine_environment(files), cwd=str(tmp_path),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_milvus(uri, process, log, timeout=180)
        index = MilvusIndex("m", "remote::milvus", {"uri": uri, "timeout": 120}, tmp_path)
        rng = np.random.default_rng(0)
        words = "lighthouse keeper lamp hedgehog beetle otter stone fog horn".split()
        rows = [StoredRow(f"r{i}", f"c{i}", f"d{i % 20}", 0, " ".join(rng.choice(words, 12)) + f" note{i}",
                          rng.standard_normal(384).astype(np.float32), {"content": str(i)}) for i in range(3000)]
        index.create("t", 384)
        assert index.capabilities("t").keyword and index.capabilities("t").dense_index == "AUTOINDEX"
        index.write("t", rows, "ingest-1", None)
        target = rows[42]
        for mode in ("vector", "keyword", "hybrid"):
            hits = index.search("t", SearchRequest(mode=mode, limit=3, vector=target.vector, text="note42"))
            assert hits[0].chunk_id == "c42", mode
        assert index.count_rows("t") == 3000
        index.close()
        assert process.poll() is None, log.read_text(errors="replace")[-2000:]
    finally:
        process.kill()
        process.wait()
        time.sleep(0.1)
