"""The comparison behind the retrieval defaults (docs/retrieval.md): chunking, title prefix, chunk
size and embedding window size, each measured in every search mode on the torchtune dev set.

Every variant is a fresh server with its own `ingestion:` settings and a fresh ingestion of the
corpus through the public API; metrics are stackrag.eval's. Takes ~1 min per variant.

Usage: .venv/bin/python bench/retrieval_sweep.py [--shared ../shared] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import httpx
import yaml

from common import ROOT, header, running_server, write_result
from retrieval_eval import evaluate

sys.path.insert(0, str(ROOT))

from stackrag.cli.evaluation import ingest, load_questions  # noqa: E402

# name: (chunk_size_in_tokens, ingestion settings)
VARIANTS = {
    "tokens-512": (512, {"chunking": "tokens", "embed_titles": False}),
    "tokens-512-titles": (512, {"chunking": "tokens", "embed_titles": True}),
    "structure-512": (512, {"chunking": "structure", "embed_titles": False}),
    "structure-512-titles": (512, {"chunking": "structure", "embed_titles": True}),
    "tokens-256": (256, {"chunking": "tokens", "embed_titles": False}),
    "tokens-256-titles": (256, {"chunking": "tokens", "embed_titles": True}),
    "structure-256": (256, {"chunking": "structure", "embed_titles": False}),
    "structure-256-titles": (256, {"chunking": "structure", "embed_titles": True}),
    "tokens-512-titles-win128": (512, {"chunking": "tokens", "embed_titles": True, "window_tokens": 128}),
    "structure-512-titles-win128": (512, {"chunking": "structure", "embed_titles": True, "window_tokens": 128}),
}


def run_variant(name: str, shared: Path, questions, unanswerable) -> dict:
    chunk_size, ingestion = VARIANTS[name]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "run.yaml"
        config.write_text(yaml.safe_dump({"version": 2, "ingestion": ingestion}))
        with running_server(Path(tmp) / "data", config) as (proc, url, _):
            with httpx.Client(base_url=url, timeout=900) as http:
                stats = ingest(http, "dev", shared / "corpus" / "torchtune-docs", chunk_size)
                return {"chunk_size_in_tokens": chunk_size, **ingestion, "ingestion": stats,
                        **evaluate(http, "dev", questions, unanswerable)}


def markdown_table(result: dict) -> str:
    """recall@1 / recall@5 / MRR@10 per variant and mode: the table in docs/retrieval.md."""
    modes = ("vector", "keyword", "hybrid", "hybrid_weighted")
    lines = ["| variant | chunks | " + " | ".join(f"{m} R@1 / R@5 / MRR" for m in modes) + " |",
             "|---|---:|" + "---|" * len(modes)]
    for name, v in result["variants"].items():
        cells = [f"{v[m]['overall']['recall@1']:.3f} / {v[m]['overall']['recall@5']:.3f} / "
                 f"{v[m]['overall']['mrr@10']:.3f}" for m in modes]
        lines.append(f"| {name} | {v['ingestion']['chunks']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrieval_sweep.json"))
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(Path(args.out).read_text())))
        return
    shared = Path(args.shared)
    questions = load_questions(shared / "eval" / "torchtune_dev.jsonl")
    unanswerable = load_questions(shared / "eval" / "torchtune_dev_unanswerable.jsonl")
    result: dict = {**header(), "questions": len(questions), "variants": {}}
    for name in args.only or VARIANTS:
        result["variants"][name] = run_variant(name, shared, questions, unanswerable)
        print(name, {m: result["variants"][name][m]["overall"] for m in ("vector", "hybrid")}, flush=True)
    write_result(result, args.out)
    print(markdown_table(result))


if __name__ == "__main__":
    main()
