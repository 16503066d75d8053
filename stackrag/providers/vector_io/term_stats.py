"""Term weights for the relevance check (VectorIndex.term_coverage): how much of a question's
weight the retrieved passages contain. Milvus does not expose its BM25 statistics, so they are
estimated from a sample of the collection's texts; a rough idf is all the check needs."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable

_WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
# Lucene's English stop set plus a few question words: they carry no topic.
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with what which who whom how when where why do does did can could "
    "should would i you we me my our your its from has have had been being so than too very".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-cased words without stop words; identifiers such as lora_rank stay whole, and CJK text
    (which has no spaces) is split into single characters."""
    words = _WORD.findall(text.lower())
    if not _CJK.search(text):
        return [w for w in words if w not in STOP_WORDS]
    tokens: list[str] = []
    for word in words:
        if _CJK.search(word):
            tokens.extend(word)
        elif word not in STOP_WORDS:
            tokens.append(word)
    return tokens


class TermSample:
    """Document frequencies of the terms of some texts."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._df: Counter[str] = Counter()
        self._count = 0
        for text in texts:
            self._df.update(set(tokenize(text)))
            self._count += 1

    def __len__(self) -> int:
        return self._count

    def idf(self, term: str) -> float:
        """BM25's idf; a term no text holds gets the highest value (it would be the rarest)."""
        df = self._df.get(term, 0)
        return math.log(1.0 + (self._count - df + 0.5) / (df + 0.5))

    def coverage(self, question: str, texts: Iterable[str]) -> float | None:
        """The share of the question's term weight (idf) that `texts` contain: low when the question
        hinges on words the passages never use. None for a question with no terms."""
        terms = set(tokenize(question))
        if not terms:
            return None
        found: set[str] = set()
        for text in texts:
            found.update(tokenize(text))
        weights = {t: self.idf(t) for t in terms}
        total = sum(weights.values())
        return sum(w for t, w in weights.items() if t in found) / total if total > 0 else None
