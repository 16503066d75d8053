"""Answers you can check: each sentence of an answer attributed to the passages that support it.

Small local models rarely write citation markers, so nothing here depends on the model: after the
answer is generated, every sentence is compared with the sentences of the passages the model was
shown, by meaning (cosine of MiniLM embeddings) and by words (the share of the sentence's content
words the passage holds). A sentence is supported by a passage when both agree well enough, or when
the words alone leave no doubt; a sentence no passage supports is marked, so a reader knows what to
check. Parameters were chosen on the dev sets' answers; bench/citations.py measures them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import NotFound
from ..providers.protocols import Embedder

if TYPE_CHECKING:
    from .models import ModelService

log = logging.getLogger(__name__)

# Supported when cosine >= SIMILAR and word overlap >= OVERLAP, or overlap >= SURE alone.
SIMILAR = 0.55
OVERLAP = 0.35
SURE = 0.75
MIN_WORDS = 3
STOPWORDS = frozenset("""a an the and or but if then else of to in on at by for with from as is are was were be been
being it its this that these those there here which who whom whose what when where why how not no nor so than too
very can could may might must shall should will would do does did done have has had having i you he she we they me
him her us them my your his our their also just only into over under about above below up down out off more most
some any each other such own same all both few many much one two use used using""".split())
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-']*")
# A sentence ends at . ! ? before a space or the end (not inside 3.14 or arxiv.org), or at a line
# break (bullets, code lines).
_SENTENCE = re.compile(r"(?:[^\n.!?]|[.!?](?!\s|$))*(?:[.!?](?=\s|$)|\n|$)")

# The thresholds above were chosen with MiniLM's cosines, so attribution uses MiniLM whatever model
# embedded the store.
MODEL = "all-MiniLM-L6-v2"
# Bounds on the work after an answer (one embedding per sentence of the answer and the passages): a
# long answer is checked up to here, against the passages the model was shown first.
MAX_ANSWER_CHARS = 6000
MAX_PASSAGES = 8
MAX_PASSAGE_CHARS = 5000


@dataclass
class Passage:
    source_id: str  # the document (or file) id
    text: str
    title: str = ""


@dataclass
class Support:
    source_id: str
    passage: int  # index into the passages given
    similarity: float
    overlap: float


@dataclass
class Sentence:
    text: str
    start: int  # character span in the answer
    end: int
    sources: list[Support] = field(default_factory=list)

    @property
    def supported(self) -> bool:
        return bool(self.sources)

    def wire(self) -> dict:
        return {"text": self.text, "start": self.start, "end": self.end, "supported": self.supported,
                "sources": [{"document_id": s.source_id, "passage": s.passage, "similarity": round(s.similarity, 3),
                             "overlap": round(s.overlap, 3)} for s in self.sources]}


def sentences(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences of `text` worth checking (at least MIN_WORDS words)."""
    spans = []
    for match in _SENTENCE.finditer(text):
        raw = match.group(0)
        stripped = raw.strip(" \n\t-*•")
        if len(_WORD.findall(stripped)) < MIN_WORDS:
            continue
        start = match.start() + raw.index(stripped)
        spans.append((start, start + len(stripped)))
    return spans


def content_words(text: str) -> set[str]:
    return {w.lower().strip("'") for w in _WORD.findall(text) if w.lower() not in STOPWORDS and len(w) > 1}


def attribute(answer: str, passages: Sequence[Passage], embedder: Embedder) -> list[Sentence]:
    """Every checkable sentence of the answer, with the passages that support it (best first).
    Blocking (it embeds): run it on a worker thread."""
    spans = sentences(answer)
    if not spans:
        return []
    found = [Sentence(answer[a:b], a, b) for a, b in spans]
    units: list[tuple[int, str]] = [(i, s) for i, p in enumerate(passages) for a, b in sentences(p.text)
                                    for s in [p.text[a:b]]]
    if not units:
        return found
    vectors = embedder.embed([s.text for s in found] + [u for _, u in units])
    asked, known = vectors[: len(found)], vectors[len(found):]
    cosines = asked @ known.T
    passage_words = [content_words(p.text) for p in passages]
    for row, sentence in enumerate(found):
        words = content_words(sentence.text)
        best: dict[int, float] = {}
        for column, (passage, _) in enumerate(units):
            best[passage] = max(best.get(passage, -1.0), float(cosines[row, column]))
        for passage, similarity in best.items():
            overlap = len(words & passage_words[passage]) / len(words) if words else 0.0
            if (similarity >= SIMILAR and overlap >= OVERLAP) or overlap >= SURE:
                sentence.sources.append(Support(passages[passage].source_id, passage, similarity, overlap))
        sentence.sources.sort(key=lambda s: (s.similarity + s.overlap), reverse=True)
    return found


def supported_share(found: list[Sentence]) -> float | None:
    return float(np.mean([s.supported for s in found])) if found else None


class Attribution:
    """attribute() for the services: off the event loop, bounded, and never in the way of the
    answer (a failure is logged and the answer goes out without citations)."""

    def __init__(self, models: ModelService):
        self._models = models
        self._told = False

    async def check(self, answer: str, passages: Sequence[Passage]) -> list[Sentence] | None:
        if not answer.strip() or not passages:
            return None
        bounded = [Passage(p.source_id, p.text[:MAX_PASSAGE_CHARS], p.title) for p in passages[:MAX_PASSAGES]]
        try:
            embedder = self._models.embedder(MODEL)
        except NotFound:
            # A config without MiniLM: said once, not at every answer.
            if not self._told:
                log.warning("answers carry no citations: the %s embedding model is not configured", MODEL)
                self._told = True
            return None
        try:
            return await asyncio.to_thread(attribute, answer[:MAX_ANSWER_CHARS], bounded, embedder)
        except Exception:  # noqa: BLE001 - citations are an extra; the answer must not fail with them
            log.exception("attribution failed; the answer goes out without citations")
            return None
