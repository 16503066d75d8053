"""Ingestion and query benchmark against a real stackrag server (Milvus Lite), printed as JSON.

What it measures, all in one run so the ratios hold on a noisy shared machine:
- cold start: `stackrag run` to a healthy /v1/health, and the server's idle RSS;
- ingest: the 48 torchtune docs through rag-tool insert (512-token chunks), chunks/s, against the
  raw embedder embedding exactly the same windows in this process (the reference; goal >= 90%);
- query: rag-tool query p50/p99 over the dev questions at that size, and at 10k chunks
  (synthetic rows made from the corpus with precomputed embeddings, then the same queries), and
  vector_stores search on the same stores (one code path: the two should cost the same);
- RSS after ingest.

With --reference COMMIT the server-side numbers are measured for that commit too (its own checkout,
this venv), rounds alternating between the two, with the ratios this checkout / reference.

Usage: .venv/bin/python bench/ingest_query.py [--shared ../shared] [--out bench/results/ingest_query.json]
       [--reference COMMIT --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

from common import ROOT, header, rss_mb, running_server, tree_total, write_result

sys.path.insert(0, str(ROOT))

from stackrag.content.chunking import embedding_windows, split_document  # noqa: E402
from stackrag.content.documents import extract_text  # noqa: E402
from stackrag.providers.inference.sentence_transformers import MiniLMEmbedder  # noqa: E402

CHUNK_SIZE = 512


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def corpus_files(shared: Path) -> list[Path]:
    root = shared / "corpus" / "torchtune-docs"
    return sorted(p for p in root.rglob("*.rst") if p.is_file())


def query_latencies(http: httpx.Client, db: str, questions: list[str]) -> list[float]:
    """rag-tool query (classic API), ms per question."""
    return _timed(http, questions, lambda q: ("/v1/tool-runtime/rag-tool/query",
                                              {"content": q, "vector_db_ids": [db]}))


def search_latencies(http: httpx.Client, db: str, questions: list[str]) -> list[float]:
    """vector_stores search (OpenAI-compatible API) on the same store, ms per question."""
    return _timed(http, questions, lambda q: (f"/v1/vector_stores/{db}/search", {"query": q, "max_num_results": 5}))


def _timed(http: httpx.Client, questions: list[str], request) -> list[float]:
    out = []
    for q in questions:
        path, body = request(q)
        t = time.perf_counter()
        http.post(path, json=body).raise_for_status()
        out.append((time.perf_counter() - t) * 1000)
    return out


def latency(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": round(percentile(values, 50), 1), "p99_ms": round(percentile(values, 99), 1)}


def raw_embedding(files: list[Path]) -> tuple[int, int, float, list[str], np.ndarray]:
    """The reference: the same model embedding the same windows, no server, no Milvus."""
    embedder = MiniLMEmbedder()
    windows: list[str] = []
    chunks = 0
    for path in files:
        text = extract_text(path.read_bytes(), "text/x-rst")
        for chunk in split_document(text, path.name, CHUNK_SIZE, embedder.tokenizer):
            chunks += 1
            windows.extend(embedding_windows(chunk.content, embedder.tokenizer, embedder.max_tokens))
    embedder.embed(windows[:8])  # warm-up, as the server's model is warm after its first request
    t = time.perf_counter()
    vectors = embedder.embed(windows)
    return chunks, len(windows), time.perf_counter() - t, windows, vectors


def synthetic_rows(windows: list[str], vectors: np.ndarray, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        j = i % len(windows)
        v = vectors[j] + rng.normal(scale=0.05, size=vectors.shape[1])
        v = v / np.linalg.norm(v)
        rows.append({"content": f"[{i}] {windows[j]}", "metadata": {"document_id": f"syn-{i // 20}"},
                     "embedding": v.astype(float).tolist()})
    return rows


def server_side(root: Path, files: list[Path], questions: list[str], windows: list[str], vectors: np.ndarray,
                synthetic: int, raw_chunks_per_s: float) -> dict:
    """Everything measured through one server running `root`'s code."""
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        with running_server(Path(tmp), root=root) as (proc, url, cold):
            result["cold_start_s"] = round(cold, 2)
            time.sleep(1.0)
            result["rss_idle_mb"] = round(tree_total(proc.pid, rss_mb), 1)
            with httpx.Client(base_url=url, timeout=600) as http:
                http.post("/v1/vector-dbs", json={"vector_db_id": "bench", "embedding_model": "all-MiniLM-L6-v2"})
                docs = [{"document_id": p.name, "content": p.read_text(), "mime_type": "text/x-rst", "metadata": {}}
                        for p in files]
                http.post("/v1/vector-io/insert", json={"vector_db_id": "bench", "chunks": [
                    {"content": "warm-up", "metadata": {"document_id": "warm"}}]}).raise_for_status()
                t = time.perf_counter()
                r = http.post("/v1/tool-runtime/rag-tool/insert",
                              json={"vector_db_id": "bench", "documents": docs, "chunk_size_in_tokens": CHUNK_SIZE})
                r.raise_for_status()
                ingest_s = time.perf_counter() - t
                server_chunks = int(r.headers["x-stackrag-chunks"])
                result["server_ingest"] = {
                    "chunks": server_chunks, "windows": int(r.headers["x-stackrag-windows"]),
                    "seconds": round(ingest_s, 2), "chunks_per_s": round(server_chunks / ingest_s, 2),
                }
                result["ingest_vs_raw"] = round((server_chunks / ingest_s) / raw_chunks_per_s, 3)
                result["rss_after_ingest_mb"] = round(tree_total(proc.pid, rss_mb), 1)
                query_latencies(http, "bench", questions[:3])
                result["query_48_docs"] = {"chunks": server_chunks, **latency(query_latencies(http, "bench", questions))}
                result["vector_store_search_48_docs"] = latency(search_latencies(http, "bench", questions))

                http.post("/v1/vector-dbs", json={"vector_db_id": "bench10k", "embedding_model": "all-MiniLM-L6-v2"})
                rows = synthetic_rows(windows, vectors, synthetic)
                t = time.perf_counter()
                for start_at in range(0, len(rows), 2000):
                    http.post("/v1/vector-io/insert", json={"vector_db_id": "bench10k",
                                                            "chunks": rows[start_at:start_at + 2000]}).raise_for_status()
                result["insert_precomputed_rows_per_s"] = round(len(rows) / (time.perf_counter() - t), 1)
                query_latencies(http, "bench10k", questions[:3])
                result["query_10k_chunks"] = {"chunks": len(rows), **latency(query_latencies(http, "bench10k", questions))}
                result["vector_store_search_10k_chunks"] = latency(search_latencies(http, "bench10k", questions))
                result["rss_after_10k_mb"] = round(tree_total(proc.pid, rss_mb), 1)
    return result


def median_of(runs: list[dict]) -> dict:
    """Per number, its median over the rounds (the same keys in every round)."""
    first = runs[0]
    if len(runs) == 1:
        return first
    return {key: median_of([r[key] for r in runs]) if isinstance(value, dict)
            else (round(statistics.median(r[key] for r in runs), 2) if isinstance(value, float) else value)
            for key, value in first.items()}


def ratios(mine: dict, theirs: dict, prefix: str = "") -> dict:
    """this / reference for every number both sides have (flattened keys)."""
    out = {}
    for key, value in mine.items():
        other = theirs.get(key)
        if isinstance(value, dict) and isinstance(other, dict):
            out.update(ratios(value, other, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and isinstance(other, (int, float)) and other:
            out[f"{prefix}{key}"] = round(value / other, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest_query.json"))
    parser.add_argument("--synthetic", type=int, default=10_000)
    parser.add_argument("--reference", help="also measure this commit's server, side by side")
    parser.add_argument("--rounds", type=int, default=1, help="runs per side, alternating; medians are reported")
    args = parser.parse_args()
    shared = Path(args.shared)
    files = corpus_files(shared)
    questions = [json.loads(line)["question"] for line in (shared / "eval" / "torchtune_dev.jsonl").open()]

    result: dict = {
        **header(),
        "documents": len(files),
        "chunk_size_in_tokens": CHUNK_SIZE,
    }
    chunks, n_windows, raw_seconds, windows, vectors = raw_embedding(files)
    result["raw_embedder"] = {"chunks": chunks, "windows": n_windows, "seconds": round(raw_seconds, 2),
                              "chunks_per_s": round(chunks / raw_seconds, 2)}

    reference_root = None
    with ExitStack() as stack:
        if args.reference:
            reference_root = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "reference"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(reference_root),
                            args.reference], check=True, capture_output=True)
            stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                            str(reference_root)], capture_output=True)
            result["reference"] = args.reference
        sides = {"this_checkout": ROOT, **({"reference": reference_root} if reference_root else {})}
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        for _ in range(args.rounds):  # alternate, so both sides see the same machine load
            for name, root in reversed(sides.items()):
                runs[name].append(server_side(root, files, questions, windows, vectors, args.synthetic,
                                              chunks / raw_seconds))
        measured = {name: median_of(values) for name, values in runs.items()}
    if reference_root is None:
        result.update(measured["this_checkout"])
    else:
        result["sides"] = measured
        result["ratio_this_checkout_to_reference"] = ratios(measured["this_checkout"], measured["reference"])
    # Query latency is mostly embedding the question; this is that cost alone, for comparison.
    embedder = MiniLMEmbedder()
    embedder.embed(["warm"])
    t = [0.0] * len(questions)
    for i, q in enumerate(questions):
        s = time.perf_counter()
        embedder.embed([q])
        t[i] = (time.perf_counter() - s) * 1000
    result["raw_query_embedding_p50_ms"] = round(statistics.median(t), 1)

    write_result(result, args.out)


if __name__ == "__main__":
    main()
