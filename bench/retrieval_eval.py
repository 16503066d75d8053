"""Retrieval quality of the server on the torchtune dev set, per search mode, printed as JSON
(stackrag.eval's metrics, one ingestion on the default config, every mode on the same vector DB).

Usage: .venv/bin/python bench/retrieval_eval.py [--shared ../shared] [--chunk-size 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

from common import ROOT, header, running_server, write_result

sys.path.insert(0, str(ROOT))

from stackrag.cli.evaluation import Question, ask, ingest, load_questions, score, summarise  # noqa: E402

MODES = {
    "vector": {"mode": "vector"},
    "keyword": {"mode": "keyword"},
    "hybrid": {"mode": "hybrid", "ranker": {"type": "rrf", "impact_factor": 60}},
    "hybrid_weighted": {"mode": "hybrid", "ranker": {"type": "weighted", "alpha": 0.5}},
}


def evaluate(http: httpx.Client, db: str, questions: list[Question], unanswerable: list[Question],
             modes: dict[str, dict] = MODES) -> dict:
    """Each mode's metrics over `questions`, and the best cosine of answerable vs unanswerable ones."""
    out: dict = {}
    cosine: list[float] = []
    for name, params in modes.items():
        scored = [ask(http, db, q, params) for q in questions]
        for s in scored:
            score(s, (1, 3, 5, 10))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrieval_eval.json"))
    args = parser.parse_args()
    shared = Path(args.shared)
    questions = load_questions(shared / "eval" / "torchtune_dev.jsonl")
    unanswerable = load_questions(shared / "eval" / "torchtune_dev_unanswerable.jsonl")
    result: dict = {**header(), "chunk_size_in_tokens": args.chunk_size, "questions": len(questions)}
    with tempfile.TemporaryDirectory() as tmp:
        with running_server(Path(tmp)) as (proc, url, _):
            with httpx.Client(base_url=url, timeout=900) as http:
                result["ingestion"] = ingest(http, "dev", shared / "corpus" / "torchtune-docs", args.chunk_size)
                result.update(evaluate(http, "dev", questions, unanswerable))
    write_result(result, args.out)


if __name__ == "__main__":
    main()
