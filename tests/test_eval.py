"""`stackrag eval`: the metrics on hand-made rankings, and the command end to end on a small corpus
through a running server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED
from stackrag.cli.evaluation import ndcg, recall_at, reciprocal_rank


def test_metrics_on_known_rankings():
    ranked = ["a", "b", "c", "d"]
    assert recall_at(ranked, {"c"}, 2) == 0.0 and recall_at(ranked, {"c"}, 3) == 1.0
    assert reciprocal_rank(ranked, {"c", "d"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranked, {"z"}) == 0.0
    assert ndcg(ranked, {"a"}) == pytest.approx(1.0)
    # relevant at ranks 2 and 4 out of 2 relevant: (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3))
    assert ndcg(ranked, {"b", "d"}) == pytest.approx((0.6309 + 0.4307) / 1.6309, abs=1e-3)


def test_eval_command_end_to_end(stack, tmp_path):
    if stack.mode == "remote":
        pytest.skip("one Milvus mode is enough for the evaluation command")
    docs = SHARED / "corpus" / "torchtune-docs"
    corpus = tmp_path / "corpus"
    chosen = ["tune_cli.rst", "tutorials/memory_optimizations.rst", "install.rst", "overview.rst"]
    for name in chosen:
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(docs / name, corpus / name)
    rows = [json.loads(line) for line in (SHARED / "eval" / "torchtune_dev.jsonl").open()]
    subset = [r for r in rows if set(r["relevant"]) <= set(chosen)][:6]
    subset.append({"id": "u", "question": "Which AWS instance types are recommended?", "relevant": [],
                   "kind": "unanswerable"})
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in subset))
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-m", "stackrag.cli", "eval", str(questions), "--corpus", str(corpus),
                           "--url", stack.url, "--json", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=str(ROOT))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "recall@5" in done.stdout and "latency p50" in done.stdout
    result = json.loads(out.read_text())
    assert result["ingestion"]["documents"] == 4 and result["overall"]["n"] == len(subset) - 1
    assert result["overall"]["recall@10"] == 1.0  # four documents: the relevant one is always in the top 10
    assert 0.0 <= result["overall"]["mrr@10"] <= 1.0 and result["overall"]["recall@5"] >= 0.5
    assert result["top_score"]["unanswerable_median"] is not None
