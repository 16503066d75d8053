"""Load: N concurrent clients mixing queries and inserts against one server for a fixed time, then an
exact row count. Printed as JSON (bench/results/load.json).

Each client loops: with probability --insert-share it inserts a few new chunks (text, embedded by
the server) of a document of its own, else it asks a dev-set question (rag-tool query, the default
hybrid search). Every insert that got 200 is counted; after the run the server is stopped and the
collection's chunks are counted in Milvus Lite directly: the count must equal seed + inserted, and
errors must be 0.

Usage: .venv/bin/python bench/load.py [--clients 32] [--seconds 60] [--insert-share 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import ROOT, header, rss_mb, running_server, write_result

sys.path.insert(0, str(ROOT))

from stackrag.providers.vector_io.milvus import MilvusIndex  # noqa: E402

DB = "load"
SEED_CHUNKS = 200


def corpus_sentences(shared: Path) -> list[str]:
    lines = []
    for path in sorted((shared / "corpus" / "torchtune-docs").rglob("*.rst")):
        lines += [line.strip() for line in path.read_text(errors="replace").splitlines() if len(line.strip()) > 60]
    return lines


async def client_loop(http: httpx.AsyncClient, number: int, until: float, questions: list[str], sentences: list[str],
                      insert_share: float, stats: dict) -> None:
    rng = random.Random(number)
    batch = 0
    while time.monotonic() < until:
        started = time.perf_counter()
        if rng.random() < insert_share:
            size = rng.randint(1, 4)
            chunks = [{"content": f"[client {number} batch {batch} #{i}] {rng.choice(sentences)}",
                       "metadata": {"document_id": f"client-{number}-{batch}"}} for i in range(size)]
            kind = "insert"
            response = await http.post("/v1/vector-io/insert", json={"vector_db_id": DB, "chunks": chunks})
            if response.status_code == 200:
                stats["inserted"] += size
            batch += 1
        else:
            kind = "query"
            response = await http.post("/v1/tool-runtime/rag-tool/query",
                                       json={"content": rng.choice(questions), "vector_db_ids": [DB]})
        stats[kind].append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            stats["errors"].append(f"{kind} {response.status_code} {response.text[:200]}")


def summary(latencies: list[float]) -> dict:
    if not latencies:
        return {"n": 0}
    ordered = sorted(latencies)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1)}


def count_chunks(data_dir: Path) -> int:
    index = MilvusIndex("count", "inline::milvus", {"db_path": str(data_dir / "milvus.db")}, data_dir)
    try:
        return index.count_rows(index.name_for(DB))
    finally:
        index.close()


async def run(url: str, args: argparse.Namespace, questions: list[str], sentences: list[str]) -> dict:
    stats: dict = {"query": [], "insert": [], "errors": [], "inserted": 0}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        until = time.monotonic() + args.seconds
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(http, n, until, questions, sentences, args.insert_share, stats)
                               for n in range(args.clients)))
        elapsed = time.perf_counter() - started
    requests = len(stats["query"]) + len(stats["insert"])
    return {"seconds": round(elapsed, 1), "requests": requests, "requests_per_s": round(requests / elapsed, 1),
            "query": summary(stats["query"]), "insert": summary(stats["insert"]),
            "inserted_chunks": stats["inserted"], "errors": len(stats["errors"]), "error_samples": stats["errors"][:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--insert-share", type=float, default=0.2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "load.json"))
    args = parser.parse_args()
    shared = Path(args.shared)
    questions = [json.loads(line)["question"] for line in (shared / "eval" / "torchtune_dev.jsonl").open()]
    sentences = corpus_sentences(shared)
    data_dir = Path(tempfile.mkdtemp(prefix="stackrag-load-"))
    with running_server(data_dir) as (proc, url, _):
        with httpx.Client(base_url=url, timeout=300) as http:
            http.post("/v1/vector-dbs", json={"vector_db_id": DB, "embedding_model": "all-MiniLM-L6-v2"}
                      ).raise_for_status()
            seed = [{"content": f"[seed {i}] {s}", "metadata": {"document_id": f"seed-{i // 10}"}}
                    for i, s in enumerate(sentences[:SEED_CHUNKS])]
            http.post("/v1/vector-io/insert", json={"vector_db_id": DB, "chunks": seed}).raise_for_status()
        result = asyncio.run(run(url, args, questions, sentences))
        result["server_rss_mb"] = rss_mb(proc.pid)
    counted = count_chunks(data_dir)
    expected = len(seed) + result["inserted_chunks"]
    write_result({**header(), "clients": args.clients, "insert_share": args.insert_share, **result,
                  "rows": {"expected": expected, "counted": counted, "match": counted == expected}}, args.out)


if __name__ == "__main__":
    main()
