"""Retrieval quality of the server on the torchtune dev set, per search mode, printed as JSON
(stackrag.eval's metrics, one ingestion, the three modes on the same vector DB).

Usage: .venv/bin/python bench/retrieval_eval.py [--shared ../shared] [--chunk-size 512]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx

from common import ROOT, header, start_server, write_result

import sys

sys.path.insert(0, str(ROOT))

from stackrag.eval import ask, ingest, load_questions, score, summarise  # noqa: E402


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
        proc, url, _ = start_server(Path(tmp))
        try:
            with httpx.Client(base_url=url, timeout=900) as http:
                result["ingestion"] = ingest(http, "dev", shared / "corpus" / "torchtune-docs", args.chunk_size)
                for mode in ("vector", "keyword", "hybrid"):
                    scored = [ask(http, "dev", q, mode) for q in questions]
                    for s in scored:
                        score(s, (1, 3, 5, 10))
                    kinds = sorted({s.question.kind for s in scored})
                    none = [ask(http, "dev", q, mode).top_score for q in unanswerable]
                    result[mode] = {
                        "overall": summarise(scored),
                        "by_kind": {k: summarise([s for s in scored if s.question.kind == k]) for k in kinds},
                        "top_score_answerable_min": round(min(s.top_score for s in scored), 4),
                        "top_score_unanswerable_max": round(max(none), 4),
                    }
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
