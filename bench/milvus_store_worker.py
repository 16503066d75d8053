"""The store alone, for bench/milvus_engines.py: run with PYTHONPATH at the tree measured (this tree,
or a `git archive` of an older one), it opens that tree's MilvusIndex (inline::milvus) on a data dir
whose server has stopped, loads every scale-N collection and times MilvusIndex.search per mode
(limit 5 as rag-tool asks, precomputed question vectors, a warm-up pass first); prints JSON with
its own process tree's RSS (the engine is a child of it).

Usage: python bench/milvus_store_worker.py DATA_DIR 1000,10000 questions.json vectors.npy
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from common import rss_mb, tree_total

LIMIT = 5
WARM_UP = 10
MODES = ("vector", "keyword", "hybrid")


def timed(fn, items) -> dict:
    for item in items[:WARM_UP]:
        fn(item)
    ms = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        ms.append((time.perf_counter() - t) * 1000)
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def main(data_dir: str, sizes: str, questions_file: str, vectors_file: str) -> None:
    from stackrag.providers.protocols import SearchRequest
    from stackrag.providers.vector_io.milvus import MilvusIndex, collection_name

    questions = json.loads(Path(questions_file).read_text())
    pairs = list(zip(questions, np.load(vectors_file)))
    started = time.perf_counter()
    index = MilvusIndex("milvus", "inline::milvus", {"db_path": "milvus.db"}, Path(data_dir))
    names = {n: collection_name(f"scale-{n}") for n in sizes.split(",")}
    for name in names.values():
        index.load(name)
    out: dict = {"open_and_load_s": round(time.perf_counter() - started, 2), "sizes": {}}
    for n, name in names.items():
        out["sizes"][n] = {
            mode: timed(lambda p, mode=mode: index.search(name, SearchRequest(
                mode=mode, limit=LIMIT, vector=p[1], text=p[0], ranker={"type": "rrf", "impact_factor": 60})), pairs)
            for mode in MODES}
    out["rss_tree_mb"] = round(tree_total(os.getpid(), rss_mb), 1)
    out["rss_self_mb"] = rss_mb(os.getpid())
    index.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:5])
