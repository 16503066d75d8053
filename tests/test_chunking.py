"""Structure-aware chunking of Markdown and reST (content/sections.py, content/chunking.py) with the
embedding model's real tokenizer."""

from __future__ import annotations

import pytest

from conftest import SHARED
from stackrag.content.chunking import split_document, tile_document
from stackrag.content.sections import blocks, markup_of
from stackrag.providers.inference.sentence_transformers import TOKENIZER_PACKAGE, WordPieceTokenizer
from stackrag.providers.model_files import package_dir


@pytest.fixture(scope="module")
def tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer(str(package_dir(TOKENIZER_PACKAGE, "") / "model" / "tokenizer.json"))


MARKDOWN = """# Guide

Intro paragraph about the guide.

## Install

Run this:

```bash
pip install thing

thing --check
```

## Use

""" + "\n\n".join(f"Paragraph {i} says something about using the thing well." for i in range(40))


def test_markdown_sections_and_fences(tokenizer):
    found = blocks(MARKDOWN, "markdown")
    headings = [b.section for b in found if b.heading]
    assert headings == ["Guide", "Guide > Install", "Guide > Use"]
    fence = next(b for b in found if "pip install" in MARKDOWN[b.start:b.end])
    # The blank line inside the fence does not split the code block.
    assert "thing --check" in MARKDOWN[fence.start:fence.end]
    chunks = split_document(MARKDOWN, "d", 64, tokenizer, markup="markdown", structured=True)
    code = [c for c in chunks if "pip install" in c.content]
    # Small sections share a chunk (a heading opens a new one only once a chunk is a quarter full).
    assert len(code) == 1 and "thing --check" in code[0].content and code[0].section == "Guide"
    assert all(c.metadata["token_count"] <= 64 for c in chunks)
    # Every paragraph lands whole in some chunk, and chunks follow the text's order.
    for i in range(40):
        assert any(f"Paragraph {i} says something about using the thing well." in c.content for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].section == "Guide > Use"


def test_rst_headings_literal_blocks_and_labels(tokenizer):
    text = (SHARED / "corpus" / "torchtune" / "chat.rst").read_text()
    found = blocks(text, "rst")
    sections = [b.section for b in found if b.heading]
    assert sections[0] == "Fine-Tuning Llama3 with Chat Data"
    assert "Fine-Tuning Llama3 with Chat Data > Template changes from Llama2 to Llama3" in sections
    assert not any(".. _" in s for s in sections)
    chunks = split_document(text, "chat", 256, tokenizer, markup="rst", structured=True)
    assert all(c.metadata["token_count"] <= 256 for c in chunks)
    # Nothing is lost: every line of text is in some chunk.
    joined = "\n".join(c.content for c in chunks)
    for line in text.splitlines():
        if line.strip() and len(line.strip()) > 3:
            assert line.strip() in joined, line


def test_token_windows_are_the_fallback(tokenizer):
    assert markup_of("text/plain", "notes.txt") is None
    assert markup_of("text/plain", "https://x/y/chat.rst") == "rst"
    assert markup_of("text/markdown", None) == "markdown"
    text = "word " * 1000
    chunks = split_document(text, "d", 100, tokenizer, markup=None, structured=True)
    assert [c.metadata["token_count"] for c in chunks[:-1]] == [100] * (len(chunks) - 1)


def _covered(text, tokenizer, chunks):
    """How many windows read each token of the text."""
    spans = [s for s in tokenizer.offsets(text) if s[1] > s[0]]
    counts = [0] * len(spans)
    for chunk in chunks:
        assert [text[a:b] for a, b in chunk.window_offsets] == chunk.windows
        for start, end in chunk.window_offsets:
            for i, (a, b) in enumerate(spans):
                if a >= start and b <= end:
                    counts[i] += 1
    return counts


def test_tiling_embeds_each_token_once(tokenizer):
    chunks = tile_document(MARKDOWN, "d", 128, tokenizer, lambda section: 60, markup="markdown")
    assert all(c.metadata["token_count"] <= 128 for c in chunks)
    assert all(tokenizer.count(w) <= 60 for c in chunks for w in c.windows)
    assert set(_covered(MARKDOWN, tokenizer, chunks)) == {1}
    # Windows follow the structure: the code block is one window, each chunk knows its section.
    assert any("```bash" in w and w.endswith("thing --check\n```") for c in chunks for w in c.windows)
    assert chunks[0].section == "Guide"
    assert chunks[-1].section == "Guide > Use"
    # Windows end at sentence ends.
    assert all(w.rstrip().endswith((".", "```", ":", "Install", "Use", "Guide")) for c in chunks for w in c.windows)


def test_tiling_cuts_an_overlong_sentence_with_a_little_overlap(tokenizer):
    text = "word " * 600 + "end."
    chunks = tile_document(text, "d", 512, tokenizer, lambda section: 254)
    windows = [w for c in chunks for w in c.windows]
    assert all(tokenizer.count(w) <= 254 for w in windows)
    counts = _covered(text, tokenizer, chunks)
    assert min(counts) == 1 and max(counts) == 2
    # Only the cut needs the overlap: under 1.15 model passes per token.
    assert sum(counts) / len(counts) < 1.15
