"""Query latency against corpus size, on the embedded Milvus (inline::milvus, the server's child) and on a
Milvus server (the same C++ engine on a loopback port, tests/milvus_servers.py, i.e. `remote::milvus`),
printed as JSON. bench/milvus_engines.py compares the embedded engine with the Milvus Lite 3 it replaced.

Rows are synthetic but made of real material: the torchtune docs split at 512 tokens (MiniLM
WordPiece tokens, as ingest_query.py does), each chunk embedded once (its windows averaged, as
`embed_whole`). Row i is chunk i % 293, copy k = i // 293: copy 0 is the real chunk and vector,
later copies carry a suffix id in their text and the vector plus gaussian noise (sigma 0.02 per
dimension, cosine ~0.93 to the original), re-normalised. Rows go in through the public
POST /v1/vector-io/insert with `embedding` set, 1000 per request, one collection per size.

For each backend and size, measured in the same run (the machine is shared: compare ratios):
- insert rows/s (client-side JSON encoding excluded: bodies are encoded before the clock starts);
- rag-tool query in the server's default mode (hybrid in this tree) and with mode=vector,
  vector-io query mode=vector and mode=hybrid (max_chunks 3, its default): p50/p99 over the 40
  dev questions, after a warm-up pass of 10 questions each;
- the store alone: stackrag's MilvusIndex.search (vector and hybrid, limit 5 as rag-tool asks)
  with precomputed question vectors, in this process, so no HTTP, no embedding, no formatting.
  Lite holds a file lock while the server runs, so for Lite this runs after the server stopped, on
  the same milvus.db opened in process; for the remote backend it runs against the same server;
- before the timings, a wait until the servers are idle (background index builds and compactions);
- server RSS idle, and after each size (cumulative: earlier sizes' collections stay loaded), and
  for the remote backend the Milvus server's RSS too; cold start on an empty data dir, and for
  Lite a second cold start with every collection present.
The raw query embedding (MiniLMEmbedder.embed of one question, p50) is measured in this process
with no server running.

Usage: .venv/bin/python bench/scale.py [--sizes 1000,10000,100000] [--backends lite,remote]
       [--shared ../shared] [--out bench/results/scale.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from common import ROOT, cpu_seconds, header, rss_mb, start_server, tree_total, write_result

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from stackrag.content.chunking import embed_whole, split_document  # noqa: E402
from stackrag.content.documents import extract_text  # noqa: E402
from stackrag.providers.inference.sentence_transformers import MiniLMEmbedder  # noqa: E402
from milvus_servers import lite_server_process  # noqa: E402  (tests/: the servers the tests start)

CHUNK_SIZE = 512
BATCH = 1000
NOISE = 0.02
RAG_MAX_CHUNKS = 5  # rag-tool query's default max_chunks
WARM_UP = 10  # questions per warm-up pass (a full pass at 100k hybrid costs a minute)
CACHE = Path(tempfile.gettempdir()) / "stackrag-bench-cache"


# -- material -----------------------------------------------------------------------------------


def base_chunks(shared: Path) -> tuple[list[dict], np.ndarray]:
    """The real corpus as 512-token chunks, each with its whole-chunk embedding (cached by content)."""
    files = sorted(p for p in (shared / "corpus" / "torchtune-docs").rglob("*.rst") if p.is_file())
    embedder = MiniLMEmbedder()
    chunks = []
    for path in files:
        text = extract_text(path.read_bytes(), "text/x-rst")
        for c in split_document(text, path.name, CHUNK_SIZE, embedder.tokenizer):
            chunks.append({"content": c.content, "document_id": c.document_id, "metadata": c.metadata})
    digest = hashlib.sha256("\x00".join(c["content"] for c in chunks).encode()).hexdigest()[:16]
    cache = CACHE / f"scale-{digest}.npy"
    if cache.exists():
        vectors = np.load(cache)
    else:
        vectors = embed_whole(embedder, [c["content"] for c in chunks])
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return chunks, vectors.astype(np.float32)


def synthetic_batch(chunks: list[dict], vectors: np.ndarray, start: int, stop: int, rng) -> list[dict]:
    rows = []
    for i in range(start, stop):
        j, copy = i % len(chunks), i // len(chunks)
        base = chunks[j]
        v = vectors[j]
        if copy:
            v = v + rng.normal(scale=NOISE, size=v.shape).astype(np.float32)
            v = v / np.linalg.norm(v)
        rows.append({
            "content": base["content"] if copy == 0 else f"{base['content']}\n[syn-{i}]",
            "metadata": {**base["metadata"], "document_id": f"{base['document_id']}#{copy}"},
            "embedding": v,
        })
    return rows


def query_vectors(questions: list[str]) -> tuple[np.ndarray, float]:
    """The questions' vectors for store-only searches, and one-question embedding p50 (ms)."""
    embedder = MiniLMEmbedder()
    embedder.embed(["warm-up"])
    ms = []
    for q in questions + questions:
        t = time.perf_counter()
        embedder.embed([q])
        ms.append((time.perf_counter() - t) * 1000)
    return embedder.embed(questions), float(np.median(ms))


# -- measuring ----------------------------------------------------------------------------------


def latency(values: list[float]) -> dict:
    a = np.asarray(values)
    return {"n": len(values), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1)}


def timed_pass(fn, items: list) -> list[float]:
    out = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t) * 1000)
    return out


def measure(fn, items: list) -> dict:
    timed_pass(fn, items[:WARM_UP])  # warm-up pass
    return latency(timed_pass(fn, items))


def insert_rows(http: httpx.Client, db: str, chunks: list[dict], vectors: np.ndarray, n: int) -> dict:
    rng = np.random.default_rng(n)
    seconds = 0.0
    for start in range(0, n, BATCH):
        rows = synthetic_batch(chunks, vectors, start, min(n, start + BATCH), rng)
        body = orjson.dumps({"vector_db_id": db, "chunks": rows}, option=orjson.OPT_SERIALIZE_NUMPY)
        t = time.perf_counter()
        http.post("/v1/vector-io/insert", content=body,
                  headers={"content-type": "application/json"}).raise_for_status()
        seconds += time.perf_counter() - t
    return {"rows": n, "seconds": round(seconds, 1), "rows_per_s": round(n / seconds, 1)}


def server_queries(http: httpx.Client, db: str, questions: list[str]) -> dict:
    def post(path: str, body: dict) -> None:
        http.post(path, json=body).raise_for_status()

    return {
        "rag_tool_query": measure(lambda q: post("/v1/tool-runtime/rag-tool/query",
                                                 {"content": q, "vector_db_ids": [db]}), questions),
        "rag_tool_query_vector": measure(lambda q: post("/v1/tool-runtime/rag-tool/query", {
            "content": q, "vector_db_ids": [db], "query_config": {"mode": "vector"}}), questions),
        "vector_io_query_vector": measure(lambda q: post("/v1/vector-io/query", {
            "vector_db_id": db, "query": q, "params": {"mode": "vector"}}), questions),
        "vector_io_query_hybrid": measure(lambda q: post("/v1/vector-io/query", {
            "vector_db_id": db, "query": q, "params": {"mode": "hybrid"}}), questions),
    }


def store_queries(index: Any, db: str, questions: list[str], vectors: np.ndarray) -> dict:
    """stackrag's own MilvusIndex.search with precomputed vectors: Milvus plus the provider's code."""
    from stackrag.providers.protocols import SearchRequest
    from stackrag.providers.vector_io.milvus import collection_name

    name = collection_name(db)
    pairs = list(zip(questions, vectors))
    out = {}
    for mode in ("vector", "hybrid"):
        def search(p, mode=mode):
            index.search(name, SearchRequest(mode=mode, limit=RAG_MAX_CHUNKS, vector=p[1], text=p[0],
                                              ranker={"type": "rrf", "impact_factor": 60.0}))
        try:
            out[f"store_search_{mode}"] = measure(search, pairs)
        except Exception as exc:  # the provider's API may move; keep the server numbers regardless
            out[f"store_search_{mode}"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


def milvus_index(provider_type: str, config: dict, data_dir: Path) -> Any:
    from stackrag.providers.vector_io.milvus import MilvusIndex

    return MilvusIndex("milvus", provider_type, config, data_dir)


def settle(pids: list[int], limit_s: float = 60.0) -> float:
    """Wait until the servers are idle (<10% of a core over 0.5 s): Milvus builds indexes and
    compacts segments in the background after an insert, which would land in the first timings."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(0.5)
        if sum(cpu_seconds(p) for p in pids) - before < 0.05:
            break
    return round(time.perf_counter() - started, 1)


def tree_rss_mb(pid: int) -> float:
    return round(tree_total(pid, rss_mb), 1)


# -- backends -----------------------------------------------------------------------------------


def remote_config(path: Path, uri: str, extra: str = "") -> Path:
    """The shape tests/conftest.py writes for remote mode (plus `extra` YAML)."""
    path.write_text(
        "version: 2\n"
        "providers:\n"
        "  vector_io:\n"
        "  - provider_id: milvus\n"
        "    provider_type: remote::milvus\n"
        f"    config: {{uri: '{uri}', token: 'root:Milvus'}}\n"
        "models:\n"
        "- model_id: all-MiniLM-L6-v2\n"
        "  provider_id: sentence-transformers\n"
        "  model_type: embedding\n"
        "  metadata: {embedding_dimension: 384}\n"
        + extra
    )
    return path


def run_sizes(url: str, proc: subprocess.Popen, sizes: list[int], material, questions: list[str],
              extra_rss=None, store=None, busy_pids: list[int] = ()) -> list[dict]:
    chunks, vectors, qvectors = material
    out = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for n in sizes:
            db = f"scale-{n}"
            http.post("/v1/vector-dbs", json={"vector_db_id": db, "embedding_model": "all-MiniLM-L6-v2",
                                              "embedding_dimension": 384}).raise_for_status()
            entry: dict = {"chunks": n, "insert": insert_rows(http, db, chunks, vectors, n)}
            print(f"  {n}: {entry['insert']}", file=sys.stderr)
            entry["settle_s"] = settle([proc.pid, *busy_pids])
            entry["rss_after_insert_mb"] = rss_mb(proc.pid)
            if extra_rss:
                entry.update(extra_rss())
            entry.update(server_queries(http, db, questions))
            if store is not None:
                entry.update(store_queries(store, db, questions, qvectors))
            print(f"  {n}: rag p50 {entry['rag_tool_query']['p50_ms']} ms", file=sys.stderr)
            out.append(entry)
    return out


def run_lite(sizes: list[int], material, questions: list[str]) -> dict:
    result: dict = {"provider_type": "inline::milvus", "config": "server defaults (no config file)"}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        proc, url, cold = start_server(data)
        try:
            result["cold_start_s"] = round(cold, 2)
            time.sleep(1.0)
            result["rss_idle_mb"] = rss_mb(proc.pid)
            result["sizes"] = run_sizes(url, proc, sizes, material, questions)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        # The same milvus.db in this process, now the server's lock is gone: the store alone.
        index = milvus_index("inline::milvus", {"db_path": "milvus.db"}, data)
        try:
            for entry in result["sizes"]:
                entry.update(store_queries(index, f"scale-{entry['chunks']}", questions, material[2]))
        finally:
            index.close()
        # Restarting on a data dir that holds every collection (they are loaded at start-up).
        proc, url, cold = start_server(data)
        try:
            result["cold_start_with_data_s"] = round(cold, 2)
            time.sleep(1.0)
            result["rss_idle_with_data_mb"] = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return result


def run_remote(sizes: list[int], material, questions: list[str]) -> dict:
    result: dict = {"provider_type": "remote::milvus", "milvus": "milvus-lite 2.5.1 C++ engine (gRPC, 127.0.0.1)"}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        with lite_server_process(data / "milvus") as (uri, mproc):
            result["milvus_rss_idle_mb"] = tree_rss_mb(mproc.pid)
            proc, url, cold = start_server(data / "stackrag", remote_config(data / "run.yaml", uri))
            index = milvus_index("remote::milvus", {"uri": uri, "token": "root:Milvus"}, data)
            try:
                result["cold_start_s"] = round(cold, 2)
                time.sleep(1.0)
                result["rss_idle_mb"] = rss_mb(proc.pid)
                result["sizes"] = run_sizes(url, proc, sizes, material, questions,
                                            extra_rss=lambda: {"milvus_rss_mb": tree_rss_mb(mproc.pid)}, store=index,
                                            busy_pids=[mproc.pid])
            finally:
                index.close()
                proc.terminate()
                proc.wait(timeout=60)
    return result


def rag_default_mode() -> str:
    try:
        from stackrag.config import RetrievalSettings

        return str(RetrievalSettings().mode)
    except Exception:  # the settings may move; the number is still worth having
        return "unknown"


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "stackrag"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return head + ("+uncommitted stackrag changes" if dirty else "")
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated chunk counts")
    parser.add_argument("--backends", default="lite,remote")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = parser.parse_args()
    shared = Path(args.shared)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    questions = [json.loads(line)["question"] for line in (shared / "eval" / "torchtune_dev.jsonl").open()]

    started = time.perf_counter()
    chunks, vectors = base_chunks(shared)
    qvectors, embed_p50 = query_vectors(questions)
    result: dict = {
        **header(),
        "code": git_state(),
        "rows": {"base_chunks": len(chunks), "chunk_size_in_tokens": CHUNK_SIZE, "noise_sigma": NOISE,
                 "insert_batch": BATCH},
        "questions": len(questions),
        "warm_up_questions": WARM_UP,
        "rag_tool_default_mode": rag_default_mode(),
        "raw_query_embedding_p50_ms": round(embed_p50, 2),
        "store_search_note": "stackrag MilvusIndex.search in the bench process with precomputed vectors, "
                             f"limit {RAG_MAX_CHUNKS}; Lite: same milvus.db after the server stopped",
    }
    material = (chunks, vectors, qvectors)
    runners = {"lite": run_lite, "remote": run_remote}
    result["backends"] = {}
    for name in args.backends.split(","):
        print(f"{name}:", file=sys.stderr)
        t = time.perf_counter()
        result["backends"][name] = runners[name](sizes, material, questions)
        result["backends"][name]["wall_s"] = round(time.perf_counter() - t, 1)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
