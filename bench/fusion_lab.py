"""Ranking ideas tried offline in seconds: each dev set is ingested once through the server's own
services (as bench/retrieval_lab.py does, embeddings cached), every question's dense and BM25
rankings of embedding windows (top 300 each, from the store itself) and the windows' vectors are
saved, and then rankers that only re-order those candidates are scored against the questions.

A ranker that wins here is worth a real run (retrieval_lab, then retrieval_eval over HTTP); a
grid of parameters is judged leave-one-set-out (chosen on three sets, scored on the fourth), the
check against choosing by a set's noise.

Usage:
  .venv/bin/python bench/fusion_lab.py dump [--variant NAME=run.yaml]      # -> ~/.cache/stackrag/fusion-lab/NAME.pkl
  .venv/bin/python bench/fusion_lab.py eval [NAME ...] [--hyde FILE]     # -> bench/results/fusion_lab.json
  .venv/bin/python bench/fusion_lab.py hyde --url http://127.0.0.1:8321  # a running server's chat model writes
                                                                         # a passage per question -> FILE for --hyde
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import math
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common import ROOT, header

sys.path.insert(0, str(ROOT))

from retrieval_eval import Variant  # noqa: E402
from retrieval_lab import CachedEmbedder, documents_of, lab_config  # noqa: E402
from stackrag.cli.evaluation import reciprocal_rank, recall_at, unique_in_order  # noqa: E402
from stackrag.providers.inference import sentence_transformers as st  # noqa: E402
from stackrag.providers.vector_io.term_stats import tokenize  # noqa: E402

CACHE = Path.home() / ".cache" / "stackrag" / "fusion-lab"
DEPTH = 300
HYDE_PROMPT = "Write one short paragraph of technical documentation that answers the question. No preamble."

Ranker = Callable[[dict, dict], list[str]]  # (question, set) -> chunk ids, best first


# -- dump -------------------------------------------------------------------------------------


async def dump_set(stack: Any, devset: Any, variant: Variant, embedder: CachedEmbedder) -> dict:
    db_id = f"fusion-{devset.name}"
    await stack.vector_dbs.register(db_id, st.MODEL_ID, None, None, None)
    db = stack.vector_dbs.open(db_id)
    docs = documents_of(devset.corpus)
    for i in range(0, len(docs), 8):
        await stack.ingestion.insert_documents(db, docs[i : i + 8], variant.chunk_size)
    index, name = db.index, db.collection
    index.load(name)
    # The lab reads the store's rows and rankings directly: what it re-orders is what a search sees.
    rows = index._call(lambda c: c.query(name, filter="chunk_index >= 0", limit=16_384, output_fields=[
        "row_id", "chunk_id", "document_id", "text", "vector", "chunk"]))
    questions = []
    for q in devset.questions + devset.unanswerable:
        vector = embedder.embed([q.question])[0]
        dense = index._call(lambda c: c.search(name, data=[vector.tolist()], anns_field="vector", limit=DEPTH,
                                               output_fields=["chunk_id"], search_params={"metric_type": "COSINE"}))[0]
        sparse = index._call(lambda c: c.search(name, data=[q.question], anns_field="sparse", limit=DEPTH,
                                                output_fields=["chunk_id"], search_params={"metric_type": "BM25"}))[0]
        questions.append({"id": q.id, "q": q.question, "kind": q.kind, "relevant": list(q.relevant), "qv": vector,
                          "dense": [(d["id"], float(d["distance"])) for d in dense],
                          "sparse": [(d["id"], abs(float(d["distance"]))) for d in sparse]})
    await stack.vector_dbs.unregister(db_id)
    return {"rows": {r["row_id"]: {"chunk_id": r["chunk_id"], "doc": r["document_id"], "text": r["text"],
                                   "title": r["chunk"].get("title") or "", "section": r["chunk"].get("section") or ""}
                     for r in rows},
            "vectors": {r["row_id"]: np.asarray(r["vector"], dtype=np.float32) for r in rows},
            "questions": questions}


def dump(variant: Variant, shared: Path) -> Path:
    from devsets import load, set_names
    from stackrag.services.stack import build_stack, close, start

    embedder = CachedEmbedder(st.MiniLMEmbedder())
    st._shared = embedder  # as in retrieval_lab: every VectorDB embeds through the cache
    sets = {}
    with tempfile.TemporaryDirectory() as tmp:
        stack = build_stack(lab_config(variant, Path(tmp)))
        start(stack)
        try:
            for devset in load(set_names(), shared):
                sets[devset.name] = asyncio.run(dump_set(stack, devset, variant, embedder))
                print(devset.name, len(sets[devset.name]["rows"]), "rows", flush=True)
        finally:
            close(stack)
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"{variant.name}.pkl"
    out.write_bytes(pickle.dumps(sets))
    return out


# -- rankers ----------------------------------------------------------------------------------


def prepare(sets: dict) -> None:
    for data in sets.values():
        data["chunk_doc"] = {r["chunk_id"]: r["doc"] for r in data["rows"].values()}
        data["ids"] = list(data["vectors"])
        data["matrix"] = np.stack([data["vectors"][i] for i in data["ids"]])
        chunk_terms: dict[str, set[str]] = {}
        for r in data["rows"].values():
            chunk_terms.setdefault(r["chunk_id"], set()).update(tokenize(r["text"]))
        data["df"] = collections.Counter(t for terms in chunk_terms.values() for t in terms)
        data["n"] = len(chunk_terms)
        data["title_terms"] = {r["chunk_id"]: set(tokenize(" ".join([_name_words(r["doc"]), r["title"], r["section"]])))
                               for r in data["rows"].values()}


def _name_words(doc: str) -> str:
    stem = doc.rsplit(".", 1)[0]
    return stem.replace("/", " ").replace("-", " ").replace("_", " ")


def per_chunk(ranking: list[tuple[str, float]], rows: dict) -> list[tuple[str, float]]:
    """Best window per chunk, in ranking order."""
    best: dict[str, float] = {}
    for row_id, score in ranking:
        best.setdefault(rows[row_id]["chunk_id"], score)
    return list(best.items())


def dense_ranking(data: dict, vector: np.ndarray) -> list[tuple[str, float]]:
    sims = data["matrix"] @ (vector / np.linalg.norm(vector))
    order = np.argsort(-sims)[:DEPTH]
    return [(data["ids"][i], float(sims[i])) for i in order]


def rrf(rankings: list[list[tuple[str, float]]], rows: dict, k: int = 60, depth: int = 40,
        level: str = "rows", weights: list[float] | None = None) -> list[str]:
    """RRF as the server fuses ("rows": windows, then the best window per chunk) or per chunk."""
    scores: dict[str, float] = collections.defaultdict(float)
    for j, ranking in enumerate(rankings):
        items = ranking if level == "rows" else per_chunk(ranking, rows)
        for rank, (key, _) in enumerate(items[:depth], start=1):
            scores[key] += (weights[j] if weights else 1.0) / (k + rank)
    ordered = sorted(scores.items(), key=lambda t: -t[1])
    if level == "rows":
        return [c for c, _ in per_chunk(ordered, rows)]
    return [c for c, _ in ordered]


def score_fusion(q: dict, data: dict, norm: str, alpha: float, depth: int, title: float = 0.0) -> list[str]:
    """alpha x dense + (1 - alpha) x BM25, each normalised per query (min-max or z-score), plus
    `title` x the question's idf share found in the document name, title and section."""
    rows = data["rows"]
    dense = dict(per_chunk(q["dense"], rows)[:depth])
    sparse = dict(per_chunk(q["sparse"], rows)[:depth])
    d = np.array(list(dense.values()))
    s = np.array(list(sparse.values()) or [0.0])
    if norm == "z":
        nd = lambda x: (x - d.mean()) / max(d.std(), 1e-9)  # noqa: E731
        ns = lambda x: (x - s.mean()) / max(s.std(), 1e-9)  # noqa: E731
        missing_s = ns(s.min())
    else:
        nd = lambda x: (x - d.min()) / max(d.max() - d.min(), 1e-9)  # noqa: E731
        ns = lambda x: x / max(s.max(), 1e-9)  # noqa: E731
        missing_s = 0.0
    bonus = title_match(q, data) if title else {}
    fused = {c: alpha * (nd(dense[c]) if c in dense else nd(d.min()))
             + (1 - alpha) * (ns(sparse[c]) if c in sparse else missing_s) + title * bonus.get(c, 0.0)
             for c in set(dense) | set(sparse)}
    return [c for c, _ in sorted(fused.items(), key=lambda t: -t[1])]


def title_match(q: dict, data: dict) -> dict[str, float]:
    terms = set(tokenize(q["q"]))
    weight = {t: math.log(1 + (data["n"] - data["df"].get(t, 0) + 0.5) / (data["df"].get(t, 0) + 0.5)) for t in terms}
    total = sum(weight.values()) or 1.0
    return {c: sum(weight[t] for t in terms & tt) / total for c, tt in data["title_terms"].items()}


def dense_prf(q: dict, data: dict, k: int, beta: float) -> list[tuple[str, float]]:
    """Rocchio on the dense leg: the query moved towards its top-k windows."""
    top = np.mean([data["vectors"][row_id] for row_id, _ in q["dense"][:k]], axis=0)
    return dense_ranking(data, q["qv"] + beta * top)


def doc_support(q: dict, data: dict, lam: float) -> list[str]:
    """Each chunk's fused score plus lam x the rest of its document's."""
    rows = data["rows"]
    scores: dict[str, float] = collections.defaultdict(float)
    for ranking in (q["dense"], q["sparse"]):
        for rank, (row_id, _) in enumerate(ranking[:40], start=1):
            scores[row_id] += 1.0 / (60 + rank)
    best = dict(per_chunk(sorted(scores.items(), key=lambda t: -t[1]), rows))
    per_doc: dict[str, float] = collections.defaultdict(float)
    for c, s in best.items():
        per_doc[data["chunk_doc"][c]] += s
    boosted = {c: s + lam * (per_doc[data["chunk_doc"][c]] - s) for c, s in best.items()}
    return [c for c, _ in sorted(boosted.items(), key=lambda t: -t[1])]


def rankers(hyde: dict[str, np.ndarray] | None) -> dict[str, Ranker]:
    found: dict[str, Ranker] = {
        "server (RRF k60 over windows, depth 40)": lambda q, d: rrf([q["dense"], q["sparse"]], d["rows"]),
        "dense only": lambda q, d: [c for c, _ in per_chunk(q["dense"], d["rows"])],
        "BM25 only": lambda q, d: [c for c, _ in per_chunk(q["sparse"], d["rows"])],
    }
    for k, depth in itertools.product((10, 30, 60), (20, 40, 100)):
        found[f"RRF per chunk k{k} depth {depth}"] = \
            lambda q, d, k=k, depth=depth: rrf([q["dense"], q["sparse"]], d["rows"], k, depth, "chunks")
    for k, beta in ((2, 0.3), (3, 0.5), (5, 1.0)):
        found[f"dense PRF k{k} beta {beta} + BM25"] = \
            lambda q, d, k=k, beta=beta: rrf([dense_prf(q, d, k, beta), q["sparse"]], d["rows"])
        found[f"dense + dense PRF k{k} beta {beta} + BM25"] = \
            lambda q, d, k=k, beta=beta: rrf([q["dense"], dense_prf(q, d, k, beta), q["sparse"]], d["rows"])
    for lam in (0.1, 0.3):
        found[f"document support lam {lam}"] = lambda q, d, lam=lam: doc_support(q, d, lam)
    if hyde:
        found["HyDE passage (dense) + BM25"] = \
            lambda q, d: rrf([dense_ranking(d, hyde[q["id"]]), q["sparse"]], d["rows"])
        found["question + HyDE (dense) + BM25"] = \
            lambda q, d: rrf([dense_ranking(d, q["qv"] / np.linalg.norm(q["qv"]) + 0.5 * hyde[q["id"]]),
                              q["sparse"]], d["rows"])
        found["question, HyDE, BM25 (3 legs)"] = \
            lambda q, d: rrf([q["dense"], dense_ranking(d, hyde[q["id"]]), q["sparse"]], d["rows"])
    return found


GRID = {f"score fusion {norm} alpha {alpha} depth {depth} title {title}":
        (lambda q, d, norm=norm, alpha=alpha, depth=depth, title=title: score_fusion(q, d, norm, alpha, depth, title))
        for norm, alpha, depth, title in itertools.product(("minmax", "z"), (0.4, 0.5, 0.6, 0.7, 0.8), (50, 100),
                                                           (0.0, 0.1, 0.2))}


# -- scoring ----------------------------------------------------------------------------------


def score(ranker: Ranker, sets: dict) -> dict[str, dict[str, float]]:
    out = {}
    for name, data in sets.items():
        rr, r1, r5, all5 = [], [], [], []
        for q in data["questions"]:
            if not q["relevant"]:
                continue
            docs = unique_in_order([data["chunk_doc"][c] for c in ranker(q, data)])
            relevant = set(q["relevant"])
            rr.append(reciprocal_rank(docs, relevant))
            r1.append(recall_at(docs, relevant, 1))
            r5.append(recall_at(docs, relevant, 5))
            if q["kind"] == "multi-doc":
                all5.append(float(relevant <= set(docs[:5])))
        out[name] = {"mrr@10": float(np.mean(rr)), "recall@1": float(np.mean(r1)), "recall@5": float(np.mean(r5)),
                     "multi_doc_all@5": float(np.mean(all5)) if all5 else None}
    return out


def mean_mrr(scores: dict[str, dict[str, float]], names: list[str] | None = None) -> float:
    return float(np.mean([scores[n]["mrr@10"] for n in names or list(scores)]))


def leave_one_set_out(grid_scores: dict[str, dict]) -> dict[str, Any]:
    sets = list(next(iter(grid_scores.values())))
    folds = {}
    for held in sets:
        train = [s for s in sets if s != held]
        pick = max(grid_scores, key=lambda k: mean_mrr(grid_scores[k], train))
        folds[held] = {"chosen_on_the_others": pick, "mrr@10": round(grid_scores[pick][held]["mrr@10"], 3)}
    return {"folds": folds, "mean_mrr@10": round(float(np.mean([f["mrr@10"] for f in folds.values()])), 3)}


def line(name: str, scores: dict[str, dict[str, float]]) -> str:
    per = " ".join(f"{s[:9]:9s} {v['mrr@10']:.3f}/{v['recall@5']:.2f}" for s, v in scores.items())
    return f"{name:48s} {per} | mean MRR {mean_mrr(scores):.3f}"


def evaluate(names: list[str], hyde_file: Path | None) -> dict:
    result: dict = {**header(), "variants": {}}
    for name in names:
        sets = pickle.loads((CACHE / f"{name}.pkl").read_bytes())
        prepare(sets)
        hyde = None
        if hyde_file:
            embedder = CachedEmbedder(st.MiniLMEmbedder())
            passages = json.loads(hyde_file.read_text())
            qs = [q for data in sets.values() for q in data["questions"]]
            vectors = embedder.embed([passages[q["id"]] for q in qs])
            hyde = {q["id"]: v for q, v in zip(qs, vectors)}
        print(f"== {name} (MRR@10 / recall@5 per set)")
        variant = result["variants"][name] = {"rankers": {}, "grid": {}}
        for label, ranker in rankers(hyde).items():
            variant["rankers"][label] = scores = score(ranker, sets)
            print(line(label, scores), flush=True)
        for label, ranker in GRID.items():
            variant["grid"][label] = score(ranker, sets)
        best = max(variant["grid"], key=lambda k: mean_mrr(variant["grid"][k]))
        print(line(f"best of grid: {best}", variant["grid"][best]))
        variant["leave_one_set_out"] = loso = leave_one_set_out(variant["grid"])
        server = mean_mrr(variant["rankers"]["server (RRF k60 over windows, depth 40)"])
        print(f"grid chosen leave-one-set-out: mean MRR {loso['mean_mrr@10']:.3f} (server ranking {server:.3f})")
    return result


def write_hyde(url: str, shared: Path, out: Path) -> None:
    from openai import OpenAI

    from devsets import load, set_names

    client = OpenAI(base_url=f"{url.rstrip('/')}/v1", api_key="none")
    model = next(m.id for m in client.models.list() if getattr(m, "model_type", "llm") == "llm")
    passages = json.loads(out.read_text()) if out.exists() else {}
    for devset in load(set_names(), shared):
        for q in devset.questions + devset.unanswerable:
            if q.id not in passages:
                answer = client.chat.completions.create(model=model, temperature=0, max_tokens=64, messages=[
                    {"role": "system", "content": HYDE_PROMPT}, {"role": "user", "content": q.question}])
                passages[q.id] = answer.choices[0].message.content or ""
                out.write_text(json.dumps(passages, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["dump", "eval", "hyde"])
    parser.add_argument("names", nargs="*", default=["defaults"])
    parser.add_argument("--variant", default="defaults", metavar="defaults|NAME=PATH")
    parser.add_argument("--hyde", type=Path, help="passages written by `hyde`, one per question id")
    parser.add_argument("--url", default="http://127.0.0.1:8321")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fusion_lab.json")
    args = parser.parse_args()
    if args.command == "dump":
        print(dump(Variant.parse(args.variant), args.shared))
    elif args.command == "hyde":
        write_hyde(args.url, args.shared, args.hyde or CACHE / "hyde.json")
    else:
        result = evaluate(args.names, args.hyde)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
