"""The embedded Milvus, side by side in one run (issue 21), printed as JSON:

- `lite3`: the previous default, Milvus Lite 3 (pure Python, in the server's process) with stackrag's
  in-process index (local_index.py: numpy cosine, BM25 postings, snapshots), i.e. the code at
  --baseline (a `git archive` of that commit, run with this venv);
- `engine`: this tree's inline::milvus, Milvus's C++ engine (milvus-lite 2.5.1) as the server's
  child process on a unix socket.

Both on the same config (inline::milvus at milvus.db, MiniLM), the same rows and the same questions:
- rows: bench/scale.py's synthetic rows (the torchtune docs at 512 tokens, real chunks and vectors,
  then copies with a suffix and noisy vectors), one vector DB per size, inserted through
  POST /v1/vector-io/insert with embeddings, 1,000 rows a request (rows/s, bodies encoded first);
- after the insert and a settle: RSS of every process of the server (the engine is a child), and
  vector-io query p50/p99 per mode (vector, keyword, hybrid RRF) over the 40 dev questions, through
  HTTP (so with the query embedding), after a warm-up pass;
- the store alone: MilvusIndex.search (limit 5, precomputed question vectors) per mode, in a worker
  process on the same data dir once the server stopped (the store is locked to one process), with
  that worker's process tree RSS and the time to open the store and load every collection
  (bench/milvus_store_worker.py);
- start-up with all sizes' data: after a clean stop, and after kill -9 of the server (Lite 3 then
  has no snapshot and rebuilds its index from the rows; the engine reads its SQLite file), each as
  seconds to /v1/health (collections are loaded before it answers) and the first hybrid query;
- retrieval quality on the real corpus: ../shared/corpus/torchtune-docs through the server's own
  ingestion (rag-tool insert, 512 tokens), then bench/retrieval_eval.py's modes on
  ../shared/eval/torchtune_dev.jsonl (MRR@10, recall@5; BM25 statistics differ between the two).
--engine-sizes adds sizes for the engine alone (1M: Lite 3 would need ~20 GB and ~40 min to insert).

Usage: .venv/bin/python bench/milvus_engines.py [--sizes 1000,10000,100000] [--engine-sizes 1000000]
       [--baseline 7239b5a] [--backends lite3,engine] [--out bench/results/milvus_engines.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from common import ROOT, header, rss_mb, start_server, write_result

sys.path.insert(0, str(ROOT))

import scale  # noqa: E402  (the synthetic rows and the timing helpers)
from retrieval_eval import evaluate  # noqa: E402
from stackrag.eval import ingest, load_questions  # noqa: E402

MODES = ("vector", "keyword", "hybrid")
# The chat model is not preloaded: its process would load 700 MB while the stores are timed.
CONFIG = """version: 2
providers:
  inference:
  - provider_id: llama-cpp
    provider_type: inline::llama-cpp
    config: {preload: false}
  vector_io:
  - provider_id: milvus
    provider_type: inline::milvus
    config: {db_path: milvus.db}
models:
- model_id: all-MiniLM-L6-v2
  provider_id: sentence-transformers
  model_type: embedding
  metadata: {embedding_dimension: 384}
"""


# -- processes ----------------------------------------------------------------------------------


def process_tree(pid: int) -> list[dict]:
    """Every process of a tree with its RSS: the server, and the engine it runs."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            name = Path(cmd[0].decode()).name + (" " + cmd[2].decode() if cmd[0].endswith(b"python") and
                                                  len(cmd) > 2 else "")
            out.append({"pid": p, "process": name[:60], "rss_mb": rss_mb(p)})
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            pass
    return out


def rss_summary(pid: int) -> dict:
    tree = process_tree(pid)
    return {"total_mb": round(sum(p["rss_mb"] for p in tree), 1), "processes": tree}


def tree_pids(pid: int) -> list[int]:
    return [p["pid"] for p in process_tree(pid)]


def stop(proc: subprocess.Popen, kill: bool = False) -> float:
    started = time.perf_counter()
    if kill:
        proc.send_signal(signal.SIGKILL)
    else:
        proc.terminate()
    proc.wait(timeout=120)
    return round(time.perf_counter() - started, 2)


def wait_gone(pids: list[int], timeout: float = 30.0) -> float:
    """Seconds until none of `pids` runs (the engine of a killed server stops by itself)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        alive = []
        for p in pids:
            try:
                os.kill(p, 0)
                state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    alive.append(p)
            except (ProcessLookupError, OSError):
                pass
        if not alive:
            break
        time.sleep(0.02)
    return round(time.perf_counter() - started, 2)


# -- measuring through the server ---------------------------------------------------------------


def http_queries(http: httpx.Client, db: str, questions: list[str]) -> dict:
    def query(mode: str):
        def run(q: str) -> None:
            http.post("/v1/vector-io/query", json={"vector_db_id": db, "query": q,
                                                   "params": {"mode": mode}}).raise_for_status()
        return run

    return {mode: scale.measure(query(mode), questions) for mode in MODES}


def first_query_ms(url: str, db: str, question: str) -> float:
    started = time.perf_counter()
    httpx.post(f"{url}/v1/vector-io/query", json={"vector_db_id": db, "query": question, "params": {"mode": "hybrid"}},
               timeout=600).raise_for_status()
    return round((time.perf_counter() - started) * 1000, 1)


def restart_times(data: Path, config: Path, root: Path, db: str, question: str) -> dict:
    """Start-up with data after a clean stop, then after kill -9 of that server."""
    out: dict = {}
    proc, url, seconds = start_server(data, config, root)
    out["clean"] = {"to_health_s": round(seconds, 2), "first_hybrid_query_ms": first_query_ms(url, db, question)}
    time.sleep(1.0)
    out["rss_idle_with_data"] = rss_summary(proc.pid)
    pids = tree_pids(proc.pid)
    stop(proc, kill=True)
    started = time.perf_counter()
    proc, url, seconds = start_server(data, config, root)
    out["after_kill_9"] = {"to_health_s": round(time.perf_counter() - started, 2),
                           "first_hybrid_query_ms": first_query_ms(url, db, question),
                           "old_processes_gone_s": wait_gone(pids)}
    out["stop_s"] = stop(proc)
    return out


# -- the store alone, in a worker process -------------------------------------------------------


def store_queries(root: Path, data: Path, sizes: list[int], questions_file: Path, vectors_file: Path) -> dict:
    # A script of its own: this one puts this tree on sys.path, and the worker must import `root`'s.
    cmd = [sys.executable, str(Path(__file__).with_name("milvus_store_worker.py")), str(data),
           ",".join(map(str, sizes)), str(questions_file), str(vectors_file)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=str(root), timeout=3600,
                          env={**os.environ, "PYTHONPATH": str(root)})
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- one backend ----------------------------------------------------------------------------------


def run_backend(name: str, root: Path, sizes: list[int], material, questions: list[str], files: tuple[Path, Path],
                shared: Path) -> dict:
    chunks, vectors, _ = material
    result: dict = {"code": str(root)}
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        config = data / "run.yaml"
        config.write_text(CONFIG)
        proc, url, seconds = start_server(data, config, root)
        result["cold_start_empty_s"] = round(seconds, 2)
        time.sleep(1.0)
        result["rss_idle_empty"] = rss_summary(proc.pid)
        result["sizes"] = {}
        try:
            with httpx.Client(base_url=url, timeout=3600) as http:
                for n in sizes:
                    db = f"scale-{n}"
                    http.post("/v1/vector-dbs", json={"vector_db_id": db, "embedding_model": "all-MiniLM-L6-v2",
                                                      "embedding_dimension": 384}).raise_for_status()
                    entry: dict = {"insert": scale.insert_rows(http, db, chunks, vectors, n)}
                    print(f"  {name} {n}: {entry['insert']}", file=sys.stderr)
                    entry["settle_s"] = scale.settle(tree_pids(proc.pid))
                    entry["rss_after_insert"] = rss_summary(proc.pid)
                    entry["http_query"] = http_queries(http, db, questions)
                    print(f"  {name} {n}: hybrid p50 {entry['http_query']['hybrid']['p50_ms']} ms, "
                          f"rss {entry['rss_after_insert']['total_mb']} MB", file=sys.stderr)
                    result["sizes"][str(n)] = entry
        finally:
            result["stop_s"] = stop(proc)
        largest = f"scale-{sizes[-1]}"
        result["restart_with_data"] = restart_times(data, config, root, largest, questions[0])
        result["store"] = store_queries(root, data, sizes, *files)
    result["retrieval_quality"] = quality(root, shared)
    return result


def quality(root: Path, shared: Path) -> dict:
    questions = load_questions(shared / "eval" / "torchtune_dev.jsonl")
    unanswerable = load_questions(shared / "eval" / "torchtune_dev_unanswerable.jsonl")
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        data = Path(tmp)
        (data / "run.yaml").write_text(CONFIG)
        proc, url, _ = start_server(data, data / "run.yaml", root)
        try:
            with httpx.Client(base_url=url, timeout=900) as http:
                out = {"ingestion": ingest(http, "dev", shared / "corpus" / "torchtune-docs", 512)}
                out.update(evaluate(http, "dev", questions, unanswerable))
                out["rss_after_ingest"] = rss_summary(proc.pid)
        finally:
            stop(proc)
    return out


def baseline_tree(ref: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--engine-sizes", default="", help="more sizes for the engine alone (e.g. 1000000)")
    parser.add_argument("--baseline", default="7239b5a", help="a commit whose inline::milvus is Milvus Lite 3")
    parser.add_argument("--backends", default="lite3,engine")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "milvus_engines.json"))
    args = parser.parse_args()
    shared = Path(args.shared)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    questions = [json.loads(line)["question"] for line in (shared / "eval" / "torchtune_dev.jsonl").open()]
    started = time.perf_counter()
    chunks, vectors = scale.base_chunks(shared)
    qvectors, embed_p50 = scale.query_vectors(questions)
    result: dict = {**header(), "code": scale.git_state(), "baseline": args.baseline, "questions": len(questions),
                    "rows": {"base_chunks": len(chunks), "chunk_size_in_tokens": scale.CHUNK_SIZE,
                             "noise_sigma": scale.NOISE, "insert_batch": scale.BATCH},
                    "raw_query_embedding_p50_ms": round(embed_p50, 2), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        files = (Path(tmp) / "questions.json", Path(tmp) / "vectors.npy")
        files[0].write_text(json.dumps(questions))
        np.save(files[1], qvectors)
        roots = {"lite3": baseline_tree(args.baseline, Path(tmp) / "baseline"), "engine": ROOT}
        for name in args.backends.split(","):
            backend_sizes = sizes + ([int(s) for s in args.engine_sizes.split(",") if s] if name == "engine" else [])
            t = time.perf_counter()
            result["backends"][name] = run_backend(name, roots[name], backend_sizes, (chunks, vectors, qvectors),
                                                   questions, files, shared)
            result["backends"][name]["wall_s"] = round(time.perf_counter() - t, 1)
            Path(args.out).with_suffix(".partial.json").write_text(json.dumps(result, indent=2))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    write_result(result, args.out)
    Path(args.out).with_suffix(".partial.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
