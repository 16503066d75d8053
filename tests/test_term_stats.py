"""Term weights for the relevance check, estimated from a sample of a collection's texts."""

from __future__ import annotations

import math

from stackrag.providers.vector_io.term_stats import TermSample, tokenize


def test_tokenize_drops_stop_words_and_keeps_identifiers():
    assert tokenize("What is the LoRA rank of lora_finetune_single_device?") == [
        "lora", "rank", "lora_finetune_single_device"]
    assert tokenize("向量数据库") == ["向", "量", "数", "据", "库"]


def test_idf_counts_texts_not_occurrences():
    sample = TermSample(["common words here" + (" hedgehog hedgehog" if i == 0 else "") for i in range(20)])
    assert sample.idf("hedgehog") == math.log(1 + (20 - 1 + 0.5) / 1.5)
    assert sample.idf("common") < sample.idf("hedgehog") < sample.idf("absent")


def test_coverage_weighs_rare_terms():
    sample = TermSample(f"torchtune finetuning recipe {i} lora" for i in range(10))
    assert sample.coverage("lora finetuning recipe", ["use lora in the finetuning recipe"]) == 1.0
    low = sample.coverage("finetuning on sagemaker", ["the finetuning recipe"])
    assert low is not None and low < 0.3
    assert sample.coverage("what is it", ["anything"]) is None
