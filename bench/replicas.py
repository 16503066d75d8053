"""Replicas: query throughput and p99 with 1 and 2 stackrag replicas against the same stores, and
vector-store ingestion throughput with 1 replica vs 2 sharing the job queue. Printed as JSON
(bench/results/replicas.json).

The stores: one PostgreSQL (tests/postgres_server.py) and one Milvus (the C++ engine on a loopback
port, tests/milvus_servers.py), each started here. Query rows are bench/scale.py's: the torchtune docs
as 512-token chunks with real vectors, copied with noise to --rows rows, inserted with their
embeddings through /v1/vector-io/insert.

Queries: --clients concurrent clients for --seconds each, asking corpus section titles as
questions, in two kinds: vector-io query in vector mode (the lightest Milvus work: mostly
stackrag's own, query embedding included) and rag-tool query in the server's default mode
(hybrid: Milvus's BM25 leg too). With 2 replicas the clients alternate between the two URLs, as a
load balancer would; 5 s of warm-up precede each timed run. CPU seconds of every process (tree)
are reported per phase: on this 2-core machine shared with other work the ratios and where the
CPU went are the point, not absolute figures.

Ingestion: the same files attached to a new vector store on replica A, timed until every file is
completed; first with A alone, then with A and B both claiming the jobs.

Usage: .venv/bin/python bench/replicas.py [--rows 10000] [--clients 16] [--seconds 30] [--files 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

from common import ROOT, cpu_seconds, free_port, header, tree_total, write_result
from scale import base_chunks, insert_rows, remote_config, settle

sys.path.insert(0, str(ROOT / "tests"))

from milvus_servers import lite_server_process  # noqa: E402  (tests/: the servers the tests start)
from postgres_server import postgres_server  # noqa: E402

DB = "replicas"
WARM_UP_SECONDS = 5.0


class Replica:
    def __init__(self, name: str, config: Path, root: Path):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"{name}.log"
        cmd = [sys.executable, "-m", "stackrag.cli", "run", "--port", str(self.port), "--config", str(config),
               "--data-dir", str(root / name)]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT))
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"replica {name} did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)

    def ingested_files(self, store_id: str) -> int:
        return self.log.read_text().count(f") into {store_id} in ")


def write_config(path: Path, pg, db: str, milvus_uri: str) -> Path:
    return remote_config(path, milvus_uri, pg.metadata_store_yaml(db))


def questions(shared: Path) -> list[str]:
    """Section titles of the corpus (an underline of = - ~ follows them), asked as questions."""
    found = []
    for path in sorted((shared / "corpus" / "torchtune-docs").rglob("*.rst")):
        lines = path.read_text(errors="replace").splitlines()
        for title, under in zip(lines, lines[1:]):
            if len(title.strip()) > 8 and re.fullmatch(r"[=\-~^]{4,}", under.strip()) and not title.startswith(".."):
                found.append(f"How does {title.strip()} work?")
    return found[:200]


async def load(urls: list[str], clients: int, seconds: float, asks: list[str], kind: str) -> dict:
    latencies: list[float] = []
    errors = 0

    async def client(number: int) -> None:
        nonlocal errors
        url = urls[number % len(urls)]
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            i = number
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                q = asks[i % len(asks)]
                i += clients
                if kind == "vector_io_vector":
                    path, body = "/v1/vector-io/query", {"vector_db_id": DB, "query": q, "params": {"mode": "vector"}}
                else:
                    path, body = "/v1/tool-runtime/rag-tool/query", {"content": q, "vector_db_ids": [DB]}
                started = time.perf_counter()
                response = await http.post(path, json=body)
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)

    wall = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    wall = time.perf_counter() - wall
    a = np.asarray(latencies)
    return {"requests": len(latencies), "errors": errors, "qps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(a, 50)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1)}


def queries(urls: list[str], args: argparse.Namespace, asks: list[str], kind: str, pids: dict[str, int]) -> dict:
    # Not timed: the first queries load collections and read term samples on each replica.
    asyncio.run(load(urls, args.clients, WARM_UP_SECONDS, asks, kind))
    result = measured(lambda: asyncio.run(load(urls, args.clients, args.seconds, asks, kind)), pids)
    result["cpu_ms_per_request"] = {name: round(1000 * cpu / result["requests"], 1)
                                    for name, cpu in result["cpu_s"].items()}
    return result


def measured(fn, pids: dict[str, int]):
    """fn() and the CPU seconds each process (tree) used meanwhile."""
    before = {name: tree_total(pid, cpu_seconds) for name, pid in pids.items()}
    result = fn()
    result["cpu_s"] = {name: round(tree_total(pid, cpu_seconds) - before[name], 1) for name, pid in pids.items()}
    return result


def ingest(replicas: list[Replica], file_ids: list[str]) -> dict:
    with httpx.Client(base_url=replicas[0].url, timeout=60) as http:
        started = time.perf_counter()
        store = http.post("/v1/vector_stores", json={"name": "bench", "file_ids": file_ids}).json()["id"]
        while True:
            files = http.get(f"/v1/vector_stores/{store}/files").json()["data"]
            if any(f["status"] == "failed" for f in files):
                raise SystemExit(f"ingestion failed: {files}")
            if all(f["status"] == "completed" for f in files):
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        chunks = sum(len(http.get(f"/v1/vector_stores/{store}/files/{f}/content").json()["data"]) for f in file_ids)
    return {"files": len(file_ids), "chunks": chunks, "seconds": round(seconds, 1),
            "chunks_per_s": round(chunks / seconds, 2),
            "files_by_replica": {r.name: r.ingested_files(store) for r in replicas}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "replicas.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    chunks, vectors = base_chunks(args.shared)
    asks = questions(args.shared)
    corpus = sorted((args.shared / "corpus" / "torchtune-docs").rglob("*.rst"), key=lambda p: p.stat().st_size)
    # Mid-sized files: several jobs each of a few seconds, the same files in both ingestion runs.
    files = corpus[len(corpus) // 2:][: args.files]
    result = {**header(), "rows": args.rows, "clients": args.clients, "seconds_per_run": args.seconds,
              "questions": len(asks), "queries": {}, "ingestion": {}}

    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-replicas-")))
        pg = stack.enter_context(postgres_server())
        milvus_uri, milvus = stack.enter_context(lite_server_process(root / "milvus"))
        config = write_config(root / "run.yaml", pg, pg.create_database("bench"), milvus_uri)
        a = Replica("a", config, root)
        stack.callback(a.stop)
        with httpx.Client(base_url=a.url, timeout=600) as http:
            db = {"vector_db_id": DB, "embedding_model": "all-MiniLM-L6-v2"}
            http.post("/v1/vector-dbs", json=db).raise_for_status()
            result["insert"] = insert_rows(http, DB, chunks, vectors, args.rows)
            file_ids = [http.post("/v1/files", files={"file": (p.name, p.read_bytes(), "text/x-rst")},
                                  data={"purpose": "assistants"}).json()["id"] for p in files]
        pids = {"replica_a": a.process.pid, "milvus": milvus.pid, "postgres": pg.pid}
        settle(list(pids.values()))

        result["ingestion"]["1_replica"] = measured(lambda: ingest([a], file_ids), pids)
        for kind in ("vector_io_vector", "rag_tool_default"):
            settle(list(pids.values()))
            result["queries"].setdefault(kind, {})["1_replica"] = queries([a.url], args, asks, kind, pids)

        b = Replica("b", config, root)
        stack.callback(b.stop)
        pids["replica_b"] = b.process.pid
        for kind in ("vector_io_vector", "rag_tool_default"):
            settle(list(pids.values()))
            result["queries"][kind]["2_replicas"] = queries([a.url, b.url], args, asks, kind, pids)
        settle(list(pids.values()))
        result["ingestion"]["2_replicas"] = measured(lambda: ingest([a, b], file_ids), pids)

    for kind, runs in result["queries"].items():
        runs["qps_ratio_2_to_1"] = round(runs["2_replicas"]["qps"] / runs["1_replica"]["qps"], 2)
        runs["p99_ratio_2_to_1"] = round(runs["2_replicas"]["p99_ms"] / runs["1_replica"]["p99_ms"], 2)
    runs = result["ingestion"]
    runs["throughput_ratio_2_to_1"] = round(runs["2_replicas"]["chunks_per_s"] / runs["1_replica"]["chunks_per_s"], 2)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
