"""Retrieval quality on every dev set, through a real server, for one or more server configs side by
side: the numbers defaults are chosen by (the mean over sets, docs/retrieval.md).

Per variant (a run.yaml, or the built-in defaults) one fresh `stackrag run`; per dev set (bench/
devsets.py: torchtune from ../shared, and eval/<set>/ fetched into ~/.cache/stackrag/devsets) one
vector DB, filled through rag-tool insert. Every question is then asked three ways:
  - ranking: vector-io query, 10 chunks, no score threshold, in the variant's default search mode
    (retrieval.mode) and ranker: recall@1/5, MRR@10, nDCG@10 over the distinct documents of the
    ranked chunks (stackrag.eval), by kind, and for multi-doc questions "all relevant documents in
    the top 5" beside "any";
  - as an agent: rag-tool query with the default query_config (5 chunks), what knowledge_search
    hands a retrieve-first agent: "declined" when it returns no chunks (the relevance gate), and
    whether the delivered chunks hold a relevant document (all of them, for multi-doc questions);
  - the best cosine (vector mode, 1 chunk), the evidence for tuning a similarity threshold.
Plus ingest chunks/s per set. Prints JSON (written to --out) and then the markdown tables.

Usage:
  .venv/bin/python bench/retrieval_eval.py                        # defaults, every set
  .venv/bin/python bench/retrieval_eval.py --variant defaults --variant titles=bench/variants/titles.yaml
  .venv/bin/python bench/retrieval_eval.py --sets cmake hatch --modes   # + every search mode (as before)
  .venv/bin/python bench/retrieval_eval.py --table                # tables of the last --out again
A variant file is a run.yaml; an optional top-level `eval:` mapping holds what is not server config
(`chunk_size_in_tokens`, default 512) and is not passed to the server.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from common import ROOT, header, running_server, write_result

sys.path.insert(0, str(ROOT))

from stackrag.config import RetrievalSettings, load_config  # noqa: E402
from stackrag.cli.evaluation import Question, Scored, ask, ingest, score, summarise  # noqa: E402

MODES = {
    "vector": {"mode": "vector"},
    "keyword": {"mode": "keyword"},
    "hybrid": {"mode": "hybrid", "ranker": {"type": "rrf", "impact_factor": 60}},
    "hybrid_weighted": {"mode": "hybrid", "ranker": {"type": "weighted", "alpha": 0.5}},
}
KS = (1, 3, 5, 10)
DEFAULT_CHUNK_SIZE = 512
# What the summary tables show, and how a variant's mean over sets is taken (mean of per-set values;
# declines are added up).
RANKING_METRICS = ("recall@1", "recall@5", "mrr@10", "ndcg@10")


def evaluate(http: httpx.Client, db: str, questions: list[Question], unanswerable: list[Question],
             modes: dict[str, dict] = MODES) -> dict:
    """Each mode's metrics over `questions`, and the best cosine of answerable vs unanswerable ones
    (bench/retrieval_sweep.py's comparison; --modes here)."""
    out: dict = {}
    cosine: list[float] = []
    for name, params in modes.items():
        scored = [ask(http, db, q, params) for q in questions]
        for s in scored:
            score(s, KS)
        if params == {"mode": "vector"}:
            cosine = [s.top_score for s in scored]  # vector-mode scores are the cosines
        kinds = sorted({s.question.kind for s in scored})
        out[name] = {"overall": summarise(scored),
                     "by_kind": {k: summarise([s for s in scored if s.question.kind == k]) for k in kinds}}
    cosine = cosine or [ask(http, db, q, {"mode": "vector"}).top_score for q in questions]
    declined = [ask(http, db, q, {"mode": "vector"}).top_score for q in unanswerable]
    out["top_cosine"] = {"answerable_min": round(min(cosine), 4),
                         "answerable_p10": round(sorted(cosine)[len(cosine) // 10], 4),
                         "unanswerable": sorted(round(x, 4) for x in declined)}
    return out


@dataclass
class Variant:
    name: str
    config: dict | None  # the run.yaml to start the server with; None = built-in defaults
    chunk_size: int
    retrieval: RetrievalSettings

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """'defaults', 'PATH' or 'NAME=PATH'."""
        if spec == "defaults":
            return cls("defaults", None, DEFAULT_CHUNK_SIZE, RetrievalSettings())
        name, _, path = spec.rpartition("=")
        path_obj = Path(path)
        if not path_obj.is_file():
            raise SystemExit(f"--variant {spec}: no such file {path}")
        data = yaml.safe_load(path_obj.read_text()) or {}
        extra = data.pop("eval", None) or {}
        chunk_size = int(extra.get("chunk_size_in_tokens", DEFAULT_CHUNK_SIZE))
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(data, f)
        try:
            retrieval = load_config(f.name).retrieval  # the server's own reading of the file
        finally:
            Path(f.name).unlink()
        return cls(name or path_obj.stem, data, chunk_size, retrieval)


@dataclass
class Asked:
    question: Question
    ranking: Scored
    declined: bool
    delivered: list[str]  # documents of the chunks knowledge_search returned, in order
    best_cosine: float
    agent_ms: float


def knowledge_search(http: httpx.Client, db: str, question: Question) -> tuple[bool, list[str], float]:
    """rag-tool query as an agent sends it: (declined, documents of the returned chunks, ms)."""
    started = time.perf_counter()
    r = http.post("/v1/tool-runtime/rag-tool/query", json={"content": question.question, "vector_db_ids": [db]})
    r.raise_for_status()
    ms = (time.perf_counter() - started) * 1000
    body = r.json()
    return body.get("content") is None, list((body.get("metadata") or {}).get("document_ids") or []), ms


def ask_all(http: httpx.Client, db: str, questions: list[Question], retrieval: RetrievalSettings) -> list[Asked]:
    ranking_params = {"mode": retrieval.mode}  # ranker: the server's configured default
    out = []
    for q in questions:
        ranking = ask(http, db, q, ranking_params)
        declined, delivered, ms = knowledge_search(http, db, q)
        best = ask(http, db, q, {"mode": "vector", "max_chunks": 1}).top_score
        out.append(Asked(q, ranking, declined, delivered, best, ms))
    return out


def mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def summarise_set(asked: list[Asked]) -> dict:
    answerable = [a for a in asked if a.question.relevant]
    unanswerable = [a for a in asked if not a.question.relevant]
    for a in answerable:
        score(a.ranking, KS)
    kinds = sorted({a.question.kind for a in answerable})
    multi = [a for a in answerable if a.question.kind == "multi-doc"]

    def all_in(docs: list[str], a: Asked) -> bool:
        return set(a.question.relevant) <= set(docs)

    def any_in(docs: list[str], a: Asked) -> bool:
        return bool(set(a.question.relevant) & set(docs))

    agent_hits = [any_in(a.delivered, a) for a in answerable]
    return {
        "questions": len(answerable),
        "unanswerable_questions": len(unanswerable),
        "overall": summarise([a.ranking for a in answerable]),
        "by_kind": {k: summarise([a.ranking for a in answerable if a.question.kind == k]) for k in kinds},
        "multi_doc": {
            "n": len(multi),
            "any@5": mean([float(any_in(a.ranking.ranked_documents[:5], a)) for a in multi]),
            "all@5": mean([float(all_in(a.ranking.ranked_documents[:5], a)) for a in multi]),
            "all@10": mean([float(all_in(a.ranking.ranked_documents[:10], a)) for a in multi]),
        },
        "agent": {
            "recall@5chunks": mean([float(h) for h in agent_hits]),
            "multi_doc_all_in_5chunks": mean([float(all_in(a.delivered, a)) for a in multi]),
            "answerable_declined": sum(a.declined for a in answerable),
            "answerable_declined_ids": [a.question.id for a in answerable if a.declined],
            "unanswerable_declined": sum(a.declined for a in unanswerable),
            "unanswerable_kept_ids": [a.question.id for a in unanswerable if not a.declined],
        },
        "best_cosine": {
            "answerable_min": round(min(a.best_cosine for a in answerable), 4),
            "answerable_p10": round(percentile([a.best_cosine for a in answerable], 0.1), 4),
            "unanswerable": sorted(round(a.best_cosine, 4) for a in unanswerable),
        },
        "latency_ms": {
            "ranking_p50": round(statistics.median(a.ranking.latency_ms for a in asked), 1),
            "knowledge_search_p50": round(statistics.median(a.agent_ms for a in asked), 1),
        },
        "per_question": [
            {"id": a.question.id, "kind": a.question.kind, "relevant": a.question.relevant,
             "ranked": a.ranking.ranked_documents[:5], "declined": a.declined, "delivered": a.delivered,
             "best_cosine": round(a.best_cosine, 4), **{k: v for k, v in a.ranking.metrics.items()}}
            for a in asked
        ],
    }


def mean_over_sets(sets: dict[str, dict]) -> dict:
    values = list(sets.values())

    def m(get) -> float | None:
        picked = [x for x in (get(v) for v in values) if x is not None]
        return mean(picked)

    kinds = sorted({k for v in values for k in v["by_kind"]})
    return {
        "sets": list(sets),
        "overall": {k: m(lambda v, k=k: v["overall"].get(k)) for k in RANKING_METRICS},
        "by_kind": {kind: {k: m(lambda v, k=k, kind=kind: v["by_kind"].get(kind, {}).get(k))
                           for k in RANKING_METRICS} for kind in kinds},
        "multi_doc": {k: m(lambda v, k=k: v["multi_doc"][k]) for k in ("any@5", "all@5", "all@10")},
        "agent": {
            "recall@5chunks": m(lambda v: v["agent"]["recall@5chunks"]),
            "multi_doc_all_in_5chunks": m(lambda v: v["agent"]["multi_doc_all_in_5chunks"]),
            "answerable_declined": sum(v["agent"]["answerable_declined"] for v in values),
            "unanswerable_declined_share": m(lambda v: v["agent"]["unanswerable_declined"]
                                             / max(v["unanswerable_questions"], 1)),
        },
        "ingest_chunks_per_s": m(lambda v: v["ingestion"]["chunks_per_s"]),
    }


def run_variant(variant: Variant, devsets, modes: bool, data_root: Path) -> dict:
    config_path = None
    if variant.config is not None:
        config_path = data_root / f"{variant.name}.yaml"
        config_path.write_text(yaml.safe_dump(variant.config))
    result: dict = {"config": variant.config, "chunk_size_in_tokens": variant.chunk_size,
                    "search_mode": variant.retrieval.mode, "ranker": variant.retrieval.ranker, "sets": {}}
    with running_server(data_root / variant.name, config_path) as (_, url, _):
        with httpx.Client(base_url=url, timeout=httpx.Timeout(1800.0, connect=10.0)) as http:
            for devset in devsets:
                db = f"dev-{devset.name}"
                stats = ingest(http, db, devset.corpus, variant.chunk_size)
                stats["chunks_per_s"] = round(stats["chunks"] / stats["seconds"], 1) if stats["seconds"] else None
                asked = ask_all(http, db, devset.questions + devset.unanswerable, variant.retrieval)
                one = {"format": devset.format, "ingestion": stats, **summarise_set(asked)}
                if modes:
                    one["modes"] = evaluate(http, db, devset.questions, devset.unanswerable)
                result["sets"][devset.name] = one
                http.delete(f"/v1/vector-dbs/{db}")
                print(f"{variant.name} / {devset.name}: {one['overall']} agent {one['agent']['answerable_declined']} "
                      f"declined, {one['agent']['unanswerable_declined']}/{one['unanswerable_questions']} "
                      f"unanswerable declined; {stats['chunks']} chunks at {stats['chunks_per_s']}/s",
                      file=sys.stderr, flush=True)
    result["mean"] = mean_over_sets(result["sets"])
    return result


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown_tables(result: dict) -> str:
    """Every set side by side and the mean, per variant: the tables in docs/retrieval.md."""
    lines = [("| variant | set | docs / chunks | chunks/s | R@1 | R@5 | MRR@10 | nDCG@10 | multi-doc all@5 / any@5 "
              "| agent R@5 chunks | answerable declined | unanswerable declined |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    kinds = ["| variant | set | " + " | ".join(f"{k} R@5 / MRR" for k in ("lexical", "paraphrase", "multi-doc"))
             + " | best cosine: answerable min / unanswerable max |",
             "|---|---|---|---|---|---|"]
    for name, v in result["variants"].items():
        for set_name, s in v["sets"].items():
            o, md, ag = s["overall"], s["multi_doc"], s["agent"]
            lines.append(
                f"| {name} | {set_name} ({s['format']}) | {s['ingestion']['documents']} / {s['ingestion']['chunks']} "
                f"| {s['ingestion']['chunks_per_s']} | {fmt(o['recall@1'])} | {fmt(o['recall@5'])} "
                f"| {fmt(o['mrr@10'])} | {fmt(o['ndcg@10'])} | {fmt(md['all@5'])} / {fmt(md['any@5'])} "
                f"| {fmt(ag['recall@5chunks'])} | {ag['answerable_declined']} of {s['questions']} "
                f"| {ag['unanswerable_declined']} of {s['unanswerable_questions']} |")
            bk = s["by_kind"]
            cells = [f"{fmt(bk[k]['recall@5'])} / {fmt(bk[k]['mrr@10'])}" if k in bk else "-"
                     for k in ("lexical", "paraphrase", "multi-doc")]
            cos = s["best_cosine"]
            kinds.append(f"| {name} | {set_name} | " + " | ".join(cells)
                         + f" | {cos['answerable_min']:.3f} / {max(cos['unanswerable'], default=0):.3f} |")
        mv = v["mean"]
        o, md, ag = mv["overall"], mv["multi_doc"], mv["agent"]
        lines.append(
            f"| **{name}** | **mean of {len(mv['sets'])}** | | {mv['ingest_chunks_per_s']:.1f} | {fmt(o['recall@1'])} "
            f"| **{fmt(o['recall@5'])}** | **{fmt(o['mrr@10'])}** | {fmt(o['ndcg@10'])} "
            f"| {fmt(md['all@5'])} / {fmt(md['any@5'])} | {fmt(ag['recall@5chunks'])} "
            f"| {ag['answerable_declined']} (sum) | {fmt(ag['unanswerable_declined_share'])} (share) |")
        bk = mv["by_kind"]
        cells = [f"{fmt(bk[k]['recall@5'])} / {fmt(bk[k]['mrr@10'])}" if k in bk else "-"
                 for k in ("lexical", "paraphrase", "multi-doc")]
        kinds.append(f"| **{name}** | **mean** | " + " | ".join(cells) + " | |")
    return "\n".join(lines) + "\n\n" + "\n".join(kinds)


def main() -> None:
    from devsets import load, set_names

    names = set_names()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="*", choices=names, help=f"default: all ({', '.join(names)})")
    parser.add_argument("--variant", action="append", metavar="defaults|PATH|NAME=PATH",
                        help="a server config to measure (repeat for several, side by side); default: defaults")
    parser.add_argument("--modes", action="store_true", help="also every search mode per set (slower)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--cache", type=Path, help="dev set documents (default ~/.cache/stackrag/devsets)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrieval_eval.json"))
    parser.add_argument("--table", action="store_true", help="print the markdown tables of --out and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown_tables(json.loads(Path(args.out).read_text())))
        return
    variants = [Variant.parse(spec) for spec in (args.variant or ["defaults"])]
    if len({v.name for v in variants}) != len(variants):
        raise SystemExit("two variants have the same name; use NAME=PATH")
    devsets = load(args.sets or names, args.shared, args.cache)
    result: dict = {**header(), "ranking": "vector-io query, 10 chunks, the variant's retrieval.mode",
                    "agent": "rag-tool query, default query_config (5 chunks)", "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            result["variants"][variant.name] = run_variant(variant, devsets, args.modes, Path(tmp))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # kept if a later variant fails
    write_result(result, args.out)
    print(markdown_tables(result))


if __name__ == "__main__":
    main()
