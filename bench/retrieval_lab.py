"""A fast inner loop for retrieval work: the dev sets through the server's own services in this
process (Ingestion, Retrieval, Milvus Lite in a temp dir), with the embedding model's vectors
cached on disk by input text, so a variant that only re-ranks or re-chunks part of a corpus costs
seconds instead of the half hour a fresh embedding of every set takes on two cores.

Not the measurement of record: bench/retrieval_eval.py (a real server over HTTP, nothing cached)
is. This lab answers "is this idea worth a real run?" with the same scoring (its summaries are
retrieval_eval's own), and prints one line per set and variant.

Usage:
  .venv/bin/python bench/retrieval_lab.py [--sets ...] [--variant NAME=run.yaml ...] [--out FILE]
  .venv/bin/python bench/retrieval_lab.py --variant base=defaults --set retrieval.mode=vector
Variants are run.yaml files as for retrieval_eval (their `eval:` mapping included); `--set
section.key=value` applies to every variant (YAML values).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from common import ROOT, header

sys.path.insert(0, str(ROOT))

from retrieval_eval import Asked, Variant, mean_over_sets, summarise_set  # noqa: E402
from stackrag.cli.evaluation import CORPUS_SUFFIXES, Question, Scored, unique_in_order  # noqa: E402
from stackrag.config import RunConfig  # noqa: E402
from stackrag.providers.inference import sentence_transformers as st  # noqa: E402
from stackrag.services.ingestion import Document  # noqa: E402
from stackrag.services.retrieval import SearchParams  # noqa: E402
from stackrag.services.stack import build_stack, close, start  # noqa: E402

CACHE = Path.home() / ".cache" / "stackrag" / "lab-embeddings.sqlite"


class CachedEmbedder:
    """MiniLM with a persistent cache keyed by the exact input text (what the model reads)."""

    def __init__(self, inner: st.MiniLMEmbedder, path: Path = CACHE) -> None:
        self._inner = inner
        self.model_id, self.dimension, self.max_tokens = inner.model_id, inner.dimension, inner.max_tokens
        self.tokenizer = inner.tokenizer
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=120)
        self._db.execute("CREATE TABLE IF NOT EXISTS v (k TEXT PRIMARY KEY, v BLOB)")
        self._lock = threading.Lock()
        self.embedded = 0  # model passes actually run (cache misses)
        self.asked = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            found = {}
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                q = f"SELECT k, v FROM v WHERE k IN ({','.join('?' * len(part))})"
                found.update(self._db.execute(q, part).fetchall())
        for i, k in enumerate(keys):
            if k in found:
                out[i] = np.frombuffer(found[k], dtype=np.float32)
            else:
                missing.setdefault(k, []).append(i)
        self.asked += len(texts)
        if missing:
            firsts = [idx[0] for idx in missing.values()]
            vectors = self._inner.embed([texts[i] for i in firsts])
            self.embedded += len(firsts)
            with self._lock:
                self._db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?)",
                                     [(k, vectors[n].tobytes()) for n, k in enumerate(missing)])
                self._db.commit()
            for n, idx in enumerate(missing.values()):
                out[idx] = vectors[n]
        return out


def documents_of(corpus: Path) -> list[Document]:
    docs = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES):
        mime = CORPUS_SUFFIXES[path.suffix.lower()]
        data = base64.b64encode(path.read_bytes()).decode()
        docs.append(Document(path.relative_to(corpus).as_posix(), f"data:{mime};base64,{data}", mime, {}))
    return docs


def lab_config(variant: Variant, data_dir: Path) -> RunConfig:
    data = dict(variant.config or {})
    data["data_dir"] = str(data_dir)
    # Embedding model only: the chat model is not needed to search.
    data["providers"] = {
        "inference": [{"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers"}],
        "vector_io": [{"provider_id": "milvus", "provider_type": "inline::milvus", "config": {"db_path": "milvus.db"}}],
        "tool_runtime": [{"provider_id": "rag-runtime", "provider_type": "inline::rag-runtime"}],
    }
    data["models"] = [{"model_id": st.MODEL_ID, "provider_id": "sentence-transformers", "model_type": "embedding",
                       "metadata": {"embedding_dimension": 384}}]
    return RunConfig.model_validate(data)


async def run_set(stack: Any, devset: Any, variant: Variant) -> dict:
    db_id = f"lab-{devset.name}"
    await stack.vector_dbs.register(db_id, st.MODEL_ID, None, None, None)
    db = stack.vector_dbs.open(db_id)
    docs = documents_of(devset.corpus)
    started = time.perf_counter()
    chunks = windows = 0
    for i in range(0, len(docs), 8):
        stats = await stack.ingestion.insert_documents(db, docs[i : i + 8], variant.chunk_size)
        chunks += stats.chunks
        windows += stats.windows
    seconds = time.perf_counter() - started
    retrieval = stack.retrieval
    asked = []
    features = []
    for q in devset.questions + devset.unanswerable:
        t = time.perf_counter()
        hits = await retrieval.search(db, q.question, SearchParams(10, -1.0, retrieval.settings.mode,
                                                                    dict(retrieval.settings.ranker)))
        ranking = Scored(q, unique_in_order([h.document_id for h in hits]), max((h.score for h in hits), default=0.0),
                         (time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        result = await retrieval.knowledge_search([db], q.question, retrieval.rag_config(None))
        agent_ms = (time.perf_counter() - t) * 1000
        best = await retrieval.search(db, q.question, SearchParams(1, -1.0, "vector", {}))
        asked.append(Asked(q, ranking, result.content is None, list(result.metadata.get("document_ids") or []),
                           best[0].score if best else 0.0, agent_ms))
        features.append(await gate_features(db, q, hits, best[0].score if best else 0.0))
    await stack.vector_dbs.unregister(db_id)
    return {"format": devset.format,
            "ingestion": {"documents": len(docs), "chunks": chunks, "windows": windows, "seconds": round(seconds, 2),
                          "chunks_per_s": round(chunks / seconds, 1) if seconds else None},
            **summarise_set(asked), "gate_features": features}


async def run_sets(stack: Any, devsets: list, variant: Variant, result: dict, out: Path) -> dict:
    sets = result["variants"].setdefault(variant.name, {"config": variant.config, "sets": {}})["sets"]
    for devset in devsets:
        sets[devset.name] = await run_set(stack, devset, variant)
        print(line(variant.name, devset.name, sets[devset.name]), flush=True)
        out.write_text(json.dumps(result, indent=2) + "\n")  # kept if a later set fails
    return sets


async def gate_features(db: Any, q: Question, hits: list, best_cosine: float) -> dict:
    """What a relevance gate could read, per question (for choosing one rule over every set)."""
    from stackrag.content.text import content_as_text
    from stackrag.providers.protocols import SearchRequest
    from stackrag.providers.vector_io.term_stats import tokenize

    texts = [content_as_text(h.chunk.get("content"), "content") for h in hits[:5]]
    coverage = {k: db.index.term_coverage(db.collection, q.question, texts[:k]) for k in (1, 3, 5)}
    absent = []
    for term in dict.fromkeys(tokenize(q.question)):
        found = db.index.search(db.collection, SearchRequest(mode="keyword", limit=1, vector=None, text=term))
        if not found:
            absent.append((term, db.embedder.tokenizer.count(term)))
    return {"id": q.id, "answerable": bool(q.relevant), "best_cosine": round(best_cosine, 4),
            "coverage": coverage, "absent": absent,
            "similarities": [None if h.similarity is None else round(h.similarity, 4) for h in hits[:5]]}


def line(name: str, set_name: str, s: dict) -> str:
    o, md, ag = s["overall"], s["multi_doc"], s["agent"]
    bk = s.get("by_kind", {})
    para = bk.get("paraphrase", {}).get("mrr@10")
    return (f"{name:24s} {set_name:10s} R@1 {o['recall@1']:.3f} R@5 {o['recall@5']:.3f} MRR {o['mrr@10']:.3f} "
            f"nDCG {o['ndcg@10']:.3f} para {para if para is None else round(para, 3)} all@5 {md['all@5']} | "
            f"declined ans {ag['answerable_declined']} unans {ag['unanswerable_declined']}/{s['unanswerable_questions']}"
            f" | chunks {s['ingestion']['chunks']} win {s['ingestion']['windows']}")


def apply_sets(config: dict | None, sets: list[str]) -> dict | None:
    if not sets:
        return config
    config = json.loads(json.dumps(config or {"version": 2}))
    for item in sets:
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = config
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return config


def main() -> None:
    from devsets import load, set_names

    names = set_names()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="*", choices=names)
    parser.add_argument("--variant", action="append", metavar="defaults|PATH|NAME=PATH")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "retrieval_lab.json")
    args = parser.parse_args()
    devsets = load(args.sets or names, args.shared)
    embedder = CachedEmbedder(st.MiniLMEmbedder())
    st._shared = embedder  # the lab's one deliberate shortcut: every VectorDB embeds through the cache
    result: dict = {**header(), "variants": {}}
    for spec in args.variant or ["defaults"]:
        variant = Variant.parse(spec)
        variant.config = apply_sets(variant.config, args.set)
        with tempfile.TemporaryDirectory() as tmp:
            stack = build_stack(lab_config(variant, Path(tmp)))
            start(stack)
            try:
                sets = asyncio.run(run_sets(stack, devsets, variant, result, args.out))
            finally:
                close(stack)
        mean = mean_over_sets(sets)
        o, ag = mean["overall"], mean["agent"]
        print(f"{variant.name:24s} {'MEAN':10s} R@1 {o['recall@1']:.3f} R@5 {o['recall@5']:.3f} MRR {o['mrr@10']:.3f} "
              f"nDCG {o['ndcg@10']:.3f} para {mean['by_kind'].get('paraphrase', {}).get('mrr@10')} "
              f"all@5 {mean['multi_doc']['all@5']} | declined ans {ag['answerable_declined']} unans-share "
              f"{ag['unanswerable_declined_share']} | model passes {embedder.embedded}/{embedder.asked}", flush=True)
        result["variants"][variant.name]["mean"] = mean
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
