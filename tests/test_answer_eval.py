"""Answer quality on the local model (slow tier): dev questions asked of a retrieve-first agent,
answers scored by key-fact recall (stackrag.eval); questions the documents do not cover declined."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import SHARED
from stackrag.cli.evaluation import Question, declines, fact_recall, ingest, key_terms, load_questions, run_answer_eval

TUTORIAL_MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"  # mapped to the local model by the example config
DOCS = ["tune_cli.rst", "tutorials/memory_optimizations.rst", "install.rst", "tutorials/lora_finetune.rst"]


def test_fact_recall_and_declines_on_known_answers():
    reference = "Pass quantize_base=True, which quantizes the base weights."
    assert key_terms(reference) >= {"pass", "quantize_base", "true", "quantiz", "base", "weight"}
    assert fact_recall("Set quantize_base=True on LoRALinear; it quantizes base weights.", reference) >= 0.8
    assert fact_recall("Use a bigger GPU.", reference) == 0.0
    assert declines("I could not find anything about this in the documents, so I cannot answer it from them.")
    assert declines("The documents do not mention SageMaker.")
    assert not declines("No. WSL does not provide the same functionality as native Windows.")
    assert not declines("Use the --sort flag to print the config in sorted order.")


@pytest.mark.slow
def test_agent_answers_from_the_documents_and_declines_the_rest(agent_stack, tmp_path):
    corpus = tmp_path / "corpus"
    for name in DOCS:
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_bytes((SHARED / "corpus" / "torchtune-docs" / name).read_bytes())
    answerable = [q for q in load_questions(SHARED / "eval" / "torchtune_dev.jsonl") if set(q.relevant) <= set(DOCS)]
    off_topic = [Question("u-capital", "What is the capital city of Australia?", []),
                 Question("u-redis", "How do I configure a Redis cluster with three primary nodes?", [])]
    assert len(answerable) >= 6
    with httpx.Client(base_url=agent_stack.url, timeout=600) as http:
        ingest(http, "answers", corpus, 512)
    result = run_answer_eval(agent_stack.url, answerable[:6] + off_topic, "answers", TUTORIAL_MODEL)
    print(json.dumps({k: v for k, v in result.items() if k != "questions"}, indent=2))
    # The reference answers' key words come back in the model's answers (0.5B model, greedy):
    # measured 0.68 on this subset (0.46 over the whole dev set, bench/answer_eval.py).
    assert result["answerable"]["fact_recall"] >= 0.35, result["questions"]
    assert result["answerable"]["declined"] == 0, result["questions"]
    assert result["unanswerable"]["declined"] == len(off_topic), result["questions"]
