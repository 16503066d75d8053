"""The search side of a Milvus Lite collection, kept in this process: its rows' vectors (exact
cosine search) and BM25 postings (keyword search).

Milvus Lite 3 is a pure-Python engine. Its dense search rebuilds a dedup/tombstone mask over every
row on each query (12 ms at 10k rows, 97 ms at 100k, for a faiss search that takes 0.1 ms), its BM25
is slower still (78 ms at 10k), and it computes BM25 document frequencies per segment: stackrag
flushes each document separately, so its keyword scores were not comparable across documents. This
index scores with numpy over collection-wide statistics (row count, average length, document
frequency of every term). It holds vectors, term ids and counts only; texts and chunks stay in
Milvus, which remains the one source of truth: the index is rebuilt from the rows when the
collection is loaded, unless a snapshot saved at the last clean shutdown matches them.

Only the embedded provider uses it: Milvus Lite belongs to one process, while a Milvus server is
shared by replicas and searches natively.
"""

from __future__ import annotations

import json
import math
from array import array
import os
import re
from collections import Counter
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

SNAPSHOT_VERSION = 2
K1 = 1.2
B = 0.75
# Postings of recent rows wait in a small dict until there are this many (or a quarter of the
# frozen rows), then everything is re-frozen into flat arrays; deleted rows are dropped then too.
MIN_PENDING_ROWS = 2_000

_WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
# Lucene's English stop set plus a few question words: they carry no topic and make up most postings.
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


@dataclass
class RowMeta:
    row_id: str
    chunk_id: str
    document_id: str
    ingest_id: str


@dataclass
class LocalHit:
    row_id: str
    score: float


class LocalIndex:
    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        # Unit-length row vectors; rows past len(self._rows) are spare capacity.
        self._vectors = np.zeros((0, dimension), dtype=np.float32)
        self._vocab: dict[str, int] = {}
        self._rows: list[RowMeta] = []
        self._positions: dict[str, int] = {}  # row_id -> index in _rows
        self._lengths = np.zeros(0, dtype=np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._live_count = 0
        self._live_length = 0.0
        self._documents: dict[str, int] = {}
        self._doc_codes = np.zeros(0, dtype=np.int32)
        # Frozen postings, grouped by term: rows of term t are _post_rows[_indptr[t]:_indptr[t+1]].
        self._indptr = np.zeros(1, dtype=np.int64)
        self._post_rows = np.zeros(0, dtype=np.int32)
        self._post_tf = np.zeros(0, dtype=np.float32)
        # Postings of recent rows as (term, row, tf) lists, and as arrays once a query needed them.
        # (array, not list: 4 bytes per posting instead of a pointer and an int object.)
        self._pending_terms, self._pending_row, self._pending_tf = array("i"), array("i"), array("i")
        self._pending_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pending_rows = 0

    def __len__(self) -> int:
        return self._live_count

    # -- writing -------------------------------------------------------------------------------

    def add(self, rows: Iterable[tuple[RowMeta, str, np.ndarray]]) -> None:
        """Index rows given as (meta, text, vector)."""
        vocab = self._vocab
        metas, lengths, codes, vectors = [], [], [], []
        for meta, text, vector in rows:
            vectors.append(vector)
            index = len(self._rows) + len(metas)
            counts = Counter(tokenize(text))
            self._pending_terms.extend([vocab.setdefault(term, len(vocab)) for term in counts])
            self._pending_tf.extend(counts.values())
            self._pending_row.extend([index] * len(counts))
            metas.append(meta)
            length = sum(counts.values())
            lengths.append(length)
            codes.append(self._documents.setdefault(meta.document_id, len(self._documents)))
            self._live_length += length
        if not metas:
            return
        self._append_vectors(np.asarray(vectors, dtype=np.float32).reshape(len(metas), self.dimension))
        self._positions.update((m.row_id, len(self._rows) + i) for i, m in enumerate(metas))
        self._rows.extend(metas)
        self._lengths = np.concatenate([self._lengths, np.asarray(lengths, dtype=np.float32)])
        self._alive = np.concatenate([self._alive, np.ones(len(metas), dtype=bool)])
        self._doc_codes = np.concatenate([self._doc_codes, np.asarray(codes, dtype=np.int32)])
        self._live_count += len(metas)
        self._pending_rows += len(metas)
        self._pending_arrays = None
        if self._pending_rows >= max(MIN_PENDING_ROWS, len(self._rows) // 4):
            self._freeze()

    def _append_vectors(self, vectors: np.ndarray) -> None:
        count, needed = len(self._rows), len(self._rows) + len(vectors)
        if needed > len(self._vectors):
            grown = np.zeros((max(needed, 2 * len(self._vectors), 1024), self.dimension), dtype=np.float32)
            grown[:count] = self._vectors[:count]
            self._vectors = grown
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self._vectors[count:needed] = vectors / np.maximum(norms, 1e-12)

    def delete(self, field: str, values: Iterable[str], keep_ingest: str | None = None) -> int:
        """Remove live rows whose `field` (document_id, chunk_id or ingest_id) is in `values`, except
        those of ingest `keep_ingest`: the same selections the Milvus deletes make."""
        wanted = set(values)
        removed = 0
        for index, meta in enumerate(self._rows):
            if not self._alive[index] or getattr(meta, field) not in wanted or meta.ingest_id == keep_ingest:
                continue
            self._alive[index] = False
            self._live_count -= 1
            self._live_length -= float(self._lengths[index])
            removed += 1
        if removed and self._live_count < len(self._rows) * 3 // 4:
            self._freeze()
        return removed

    def _freeze(self) -> None:
        """Merge pending postings into the flat arrays, dropping deleted rows and renumbering."""
        terms = np.repeat(np.arange(len(self._indptr) - 1, dtype=np.int64), np.diff(self._indptr))
        pending_terms, pending_rows, pending_tf = self._pending()
        terms = np.concatenate([terms, pending_terms.astype(np.int64)])
        rows = np.concatenate([self._post_rows, pending_rows])
        tfs = np.concatenate([self._post_tf, pending_tf])
        keep = self._alive[rows]
        renumber = np.cumsum(self._alive, dtype=np.int64) - 1
        terms, rows, tfs = terms[keep], renumber[rows[keep]].astype(np.int32), tfs[keep]
        order = np.argsort(terms, kind="stable")
        self._post_rows, self._post_tf = rows[order], tfs[order]
        counts = np.bincount(terms, minlength=len(self._vocab))
        self._indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        alive = self._alive
        self._rows = [m for m, a in zip(self._rows, alive) if a]
        self._positions = {m.row_id: i for i, m in enumerate(self._rows)}
        self._lengths, self._doc_codes = self._lengths[alive], self._doc_codes[alive]
        self._vectors = self._vectors[: len(alive)][alive]
        self._alive = np.ones(len(self._rows), dtype=bool)
        self._pending_terms, self._pending_row, self._pending_tf = array("i"), array("i"), array("i")
        self._pending_arrays, self._pending_rows = None, 0

    def _pending(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._pending_arrays is None:
            self._pending_arrays = (np.frombuffer(self._pending_terms, dtype=np.int32).copy(),
                                    np.frombuffer(self._pending_row, dtype=np.int32).copy(),
                                    np.frombuffer(self._pending_tf, dtype=np.int32).astype(np.float32))
        return self._pending_arrays

    # -- reading -------------------------------------------------------------------------------

    def _postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray]:
        rows, tfs = self._post_rows[:0], self._post_tf[:0]
        if term_id + 1 < len(self._indptr):
            lo, hi = self._indptr[term_id], self._indptr[term_id + 1]
            rows, tfs = self._post_rows[lo:hi], self._post_tf[lo:hi]
        if self._pending_rows:
            pending_terms, pending_rows, pending_tf = self._pending()
            match = pending_terms == term_id
            rows = np.concatenate([rows, pending_rows[match]])
            tfs = np.concatenate([tfs, pending_tf[match]])
        if self._live_count == len(self._rows):
            return rows, tfs
        live = self._alive[rows]
        return rows[live], tfs[live]

    def idf(self, term: str) -> float:
        """BM25's idf; a term no row holds gets the highest value (it would be the rarest)."""
        term_id = self._vocab.get(term)
        df = 0 if term_id is None else len(self._postings(term_id)[0])
        return _idf(self._live_count, df)

    def _candidates(self, document_ids: list[str] | None) -> np.ndarray:
        mask = self._alive.copy()
        if document_ids is not None:
            codes = [self._documents[d] for d in document_ids if d in self._documents]
            mask &= np.isin(self._doc_codes, codes)
        return mask

    def _top(self, scores: np.ndarray, mask: np.ndarray, limit: int) -> list[LocalHit]:
        picked = np.flatnonzero(mask)
        if len(picked) > limit:
            picked = picked[np.argpartition(-scores[picked], limit - 1)[:limit]]
        picked = picked[np.argsort(-scores[picked], kind="stable")]
        return [LocalHit(self._rows[i].row_id, float(scores[i])) for i in picked]

    def search_dense(self, vector: np.ndarray, limit: int, document_ids: list[str] | None = None) -> list[LocalHit]:
        """Exact cosine search, best first."""
        if not self._live_count or limit <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        scores = self._vectors[: len(self._rows)] @ query
        return self._top(scores, self._candidates(document_ids), limit)

    def cosine(self, row_ids: set[str], vector: np.ndarray) -> dict[str, float]:
        """The cosine of the given rows to `vector` (rows found by keyword search)."""
        query = np.asarray(vector, dtype=np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        found = {}
        for row_id in row_ids:
            i = self._positions.get(row_id)
            if i is not None and self._alive[i]:
                found[row_id] = float(self._vectors[i] @ query)
        return found

    def search(self, text: str, limit: int, document_ids: list[str] | None = None) -> list[LocalHit]:
        """BM25 search, best first."""
        if not self._live_count or limit <= 0:
            return []
        n = self._live_count
        average = max(self._live_length / n, 1.0)
        scores = np.zeros(len(self._rows), dtype=np.float32)
        for term in set(tokenize(text)):
            term_id = self._vocab.get(term)
            if term_id is None:
                continue
            rows, tfs = self._postings(term_id)
            if not len(rows):
                continue
            norm = K1 * (1.0 - B + B * self._lengths[rows] / average)
            scores[rows] += _idf(n, len(rows)) * tfs * (K1 + 1.0) / (tfs + norm)
        return self._top(scores, self._candidates(document_ids) & (scores > 0), limit)

    def coverage(self, question: str, texts: Iterable[str]) -> float | None:
        """The share of the question's term weight (idf) that `texts` contain: low when the question
        hinges on words the passages never use. None for a question with no terms."""
        terms = set(tokenize(question))
        if not terms:
            return None
        found = set()
        for text in texts:
            found.update(tokenize(text))
        weights = {t: self.idf(t) for t in terms}
        total = sum(weights.values())
        return sum(w for t, w in weights.items() if t in found) / total if total > 0 else None


    # -- snapshots -----------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the index to `path` (atomically), so a restart need not re-read every row."""
        self._freeze()
        header = {
            "version": SNAPSHOT_VERSION,
            "vocab": list(self._vocab),
            "documents": list(self._documents),
            "rows": [astuple(m) for m in self._rows],
            "live_length": self._live_length,
        }
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as out:
            np.savez(out, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                     indptr=self._indptr, post_rows=self._post_rows, post_tf=self._post_tf,
                     lengths=self._lengths, doc_codes=self._doc_codes, vectors=self._vectors[: len(self._rows)])
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> LocalIndex | None:
        """The index saved at `path`, or None when there is none or it is from another version."""
        try:
            with np.load(path) as data:
                header = json.loads(data["header"].tobytes())
                if header.get("version") != SNAPSHOT_VERSION:
                    return None
                index = cls(int(data["vectors"].shape[1]))
                index._vectors = data["vectors"]
                index._indptr, index._post_rows, index._post_tf = data["indptr"], data["post_rows"], data["post_tf"]
                index._lengths, index._doc_codes = data["lengths"], data["doc_codes"]
        except (OSError, ValueError, KeyError):
            return None
        index._vocab = {term: i for i, term in enumerate(header["vocab"])}
        index._documents = {doc: i for i, doc in enumerate(header["documents"])}
        index._rows = [RowMeta(*row) for row in header["rows"]]
        index._positions = {m.row_id: i for i, m in enumerate(index._rows)}
        index._alive = np.ones(len(index._rows), dtype=bool)
        index._live_count = len(index._rows)
        index._live_length = float(header["live_length"])
        return index


def _idf(n: int, df: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))
