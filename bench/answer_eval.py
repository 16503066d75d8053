"""Answer quality of the retrieve-first agent on the local chat model over the torchtune dev set
(and the unanswerable questions), printed as JSON: key-fact recall, declines, turn time.

Usage: .venv/bin/python bench/answer_eval.py [--shared ../shared] [--max-chunks 5] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import httpx

from common import ROOT, header, running_server, write_result

sys.path.insert(0, str(ROOT))

from stackrag.cli.evaluation import ingest, load_questions, run_answer_eval  # noqa: E402

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"  # the tutorial's id, served locally by the example config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--limit", type=int, default=0, help="only the first N answerable questions")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "answer_eval.json"))
    args = parser.parse_args()
    shared = Path(args.shared)
    questions = load_questions(shared / "eval" / "torchtune_dev.jsonl")
    questions = questions[: args.limit] if args.limit else questions
    questions += load_questions(shared / "eval" / "torchtune_dev_unanswerable.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("STACKRAG_MODELS_DIR", str(Path(tmp) / "models"))
        with running_server(Path(tmp) / "data", ROOT / "examples" / "tutorial-offline.yaml") as (proc, url, _):
            with httpx.Client(base_url=url, timeout=900) as http:
                ingestion = ingest(http, "dev", shared / "corpus" / "torchtune-docs", 512)
            result = run_answer_eval(url, questions, "dev", MODEL,
                                     progress=lambda done, total: print(f"{done}/{total}", file=sys.stderr))
    write_result({**header(), "ingestion": ingestion, **result}, args.out)


if __name__ == "__main__":
    main()
