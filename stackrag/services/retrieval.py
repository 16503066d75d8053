"""Retrieval: vector-io queries over one vector DB, and the knowledge_search tool over several."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..config import RetrievalSettings
from ..content.templates import DEFAULT_CHUNK_TEMPLATE, render
from ..content.text import content_as_text
from ..errors import BadRequest
from ..providers.protocols import Embedder, Hit, SearchRequest
from ..providers.vector_io.fusion import fuse
from ..providers.vector_io.term_stats import tokenize
from ..wire.llama_stack import (DefaultQueryGenerator, LLMQueryGenerator, QueryParams,
                                  RAGQueryConfig as RAGQueryConfigIn, Ranker)
from .vector_dbs import VectorDB

HIDDEN_METADATA = ("token_count", "metadata_token_count")
# How many of the best chunks the term-coverage check reads (measured: 1 overlaps answerable and
# unanswerable questions, 3 separates them best; docs/retrieval.md).
COVERAGE_CHUNKS = 3
# Questions about a collection as a whole; a query close to one of these gets an overview (the
# opening passage of each document) rather than a search for a topic it does not name.
OVERVIEW_QUESTIONS = (
    "What topics do these documents cover?",
    "Summarize the documents.",
    "What are the main topics that were explained?",
    "Give me an overview of the knowledge base.",
    "What is this collection about?",
)


def ranker_dict(ranker: Ranker | None, default: dict[str, Any]) -> dict[str, Any]:
    """A typed ranker as the index reads it ({type: rrf, impact_factor} or {type: weighted, alpha})."""
    return ranker.model_dump() if ranker is not None else dict(default)


@dataclass
class SearchParams:
    max_chunks: int = 3
    score_threshold: float = 0.0
    mode: str = "vector"
    ranker: dict[str, Any] = field(default_factory=dict)


@dataclass
class RAGQueryConfig:
    """A RAG query config with every default filled in (Llama Stack's, and the server's retrieval settings)."""

    max_tokens_in_context: int = 4096
    max_chunks: int = 5
    chunk_template: str = DEFAULT_CHUNK_TEMPLATE
    mode: str = "vector"
    ranker: dict[str, Any] = field(default_factory=dict)
    separator: str = " "
    # query_generator_config {type: llm}: the chat model that writes the query, from this template.
    query_model: str | None = None
    query_template: str | None = None


@dataclass
class RAGResult:
    content: list[dict[str, str]] | None
    metadata: dict[str, Any]
    # The chunks behind `content`, for callers inside the server (the agent's prompt).
    hits: list[Hit] = field(default_factory=list)


class Retrieval:
    def __init__(self, settings: RetrievalSettings | None = None):
        self.settings = settings or RetrievalSettings()
        self._overview_vectors: dict[str, np.ndarray] = {}

    def search_params(self, params: QueryParams | None) -> SearchParams:
        # vector-io query keeps Llama Stack's default mode: its scores are cosine similarities that
        # clients compare with score_threshold; hybrid (fused-rank) scores would break that contract.
        params = params or QueryParams()
        return SearchParams(3 if params.max_chunks is None else params.max_chunks,
                            0.0 if params.score_threshold is None else params.score_threshold,
                            params.mode or "vector", ranker_dict(params.ranker, self.settings.ranker))

    def rag_config(self, config: RAGQueryConfigIn | None) -> RAGQueryConfig:
        config = config or RAGQueryConfigIn()
        generator = config.query_generator_config
        llm = generator if isinstance(generator, LLMQueryGenerator) else None
        return RAGQueryConfig(
            max_tokens_in_context=4096 if config.max_tokens_in_context is None else config.max_tokens_in_context,
            max_chunks=5 if config.max_chunks is None else config.max_chunks,
            chunk_template=config.chunk_template or DEFAULT_CHUNK_TEMPLATE,
            mode=config.mode or self.settings.mode,
            ranker=ranker_dict(config.ranker, self.settings.ranker),
            separator=generator.separator if isinstance(generator, DefaultQueryGenerator) else " ",
            query_model=llm.model if llm else None,
            query_template=llm.template if llm else None,
        )

    async def search(
        self,
        db: VectorDB,
        query: str,
        params: SearchParams,
        document_ids: list[str] | None = None,
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        if not query.strip():
            raise BadRequest("query must not be empty")
        if vector is None and (params.mode != "keyword" or not db.index.capabilities(db.collection).keyword):
            vector = (await asyncio.to_thread(db.embedder.embed, [query]))[0]
        if params.mode == "hybrid" and self.settings.fusion == "chunks" and vector is not None \
                and db.index.capabilities(db.collection).keyword:
            hits = await self._fused_by_chunk(db, query, vector, params, document_ids)
        else:
            request = SearchRequest(mode=params.mode, limit=params.max_chunks, vector=vector, text=query,
                                    ranker=params.ranker, document_ids=document_ids)
            hits = await asyncio.to_thread(db.index.search, db.collection, request)
        # Llama Stack's threshold of 0, its default, keeps every match: its scores are never below 0
        # (faiss reports 1/distance). A cosine can be slightly negative (a chunk inserted with an
        # embedding of its own, far from the query), and such a match must still come back.
        if not params.score_threshold:
            return hits
        return [h for h in hits if h.score >= params.score_threshold]

    async def _fused_by_chunk(self, db: VectorDB, query: str, vector: np.ndarray, params: SearchParams,
                              document_ids: list[str] | None) -> list[Hit]:
        """Hybrid search fused per chunk, not per row: each leg ranks chunks by their best window,
        and a chunk whose best dense window and best keyword window differ (a long chunk) gets
        credit from both, as a one-window chunk does."""
        depth = max(params.max_chunks, self.settings.candidates)
        dense_request = SearchRequest(mode="vector", limit=depth, vector=vector, document_ids=document_ids)
        keyword_request = SearchRequest(mode="keyword", limit=depth, text=query, document_ids=document_ids)
        dense, keyword = await asyncio.gather(
            asyncio.to_thread(db.index.search, db.collection, dense_request),
            asyncio.to_thread(db.index.search, db.collection, keyword_request),
        )
        fused = fuse([(h.chunk_id, h.score) for h in dense], [(h.chunk_id, h.score) for h in keyword],
                     params.ranker, params.max_chunks)
        by_id = {h.chunk_id: h for h in keyword}
        by_id.update({h.chunk_id: h for h in dense})  # dense hits carry the cosine
        return [replace(by_id[chunk_id], score=score) for chunk_id, score in fused]

    async def knowledge_search(self, dbs: list[VectorDB], content: Any, config: RAGQueryConfig) -> RAGResult:
        """Llama Stack's knowledge_search, with two judgements of our own (RetrievalSettings):
        a question about the collection as a whole ("what topics are explained?") gets the opening
        passage of each document, and a question nothing in the documents is similar enough to gets
        no chunks at all (content None) rather than the least bad ones."""
        if not dbs:
            raise BadRequest(
                "No vector DBs were provided to the knowledge search tool. Please provide at least one vector DB ID."
            )
        query = content_as_text(content, "content", config.separator)
        if not query.strip():
            raise BadRequest("query must not be empty")
        embedder = dbs[0].embedder
        vector = None
        if all(db.embedder is embedder for db in dbs) and config.mode != "keyword":
            vector = (await asyncio.to_thread(embedder.embed, [query]))[0]
        params = SearchParams(config.max_chunks, 0.0, config.mode, config.ranker)
        if vector is not None and await self._asks_for_overview(embedder, vector):
            heads = await asyncio.gather(
                *(asyncio.to_thread(db.index.document_heads, db.collection, config.max_chunks) for db in dbs)
            )
            picked = [h for group in heads for h in group][: config.max_chunks]
            if picked:
                return format_knowledge_search(picked, query, config, embedder.tokenizer)
        results = await asyncio.gather(*(self.search(db, query, params, vector=vector) for db in dbs))
        found = sorted(((h, db) for db, hits in zip(dbs, results) for h in hits),
                       key=lambda t: t[0].score, reverse=True)[: config.max_chunks]
        if found and not await self._relevant(query, found):
            found = []
        picked = [h for h, _ in found]
        if not picked:
            return RAGResult(content=None, metadata={"document_ids": [], "chunks": [], "scores": [],
                                                     "similarities": []})
        return format_knowledge_search(picked, query, config, embedder.tokenizer)

    async def _relevant(self, query: str, found: list[tuple[Hit, VectorDB]]) -> bool:
        """Whether the best chunks are about the question at all (docs/retrieval.md, "Knowing when
        nothing matches"): their cosine, and for a middling cosine the question's words they hold."""
        settings = self.settings
        similarities = [h.similarity for h, _ in found if h.similarity is not None]
        if not similarities:
            return True
        best = max(similarities)
        if settings.relevance_threshold is not None and best < settings.relevance_threshold:
            return False
        if best >= settings.trusted_similarity:
            return True
        _, db = found[0]
        if settings.unknown_terms and await self._has_unknown_term(db, query):
            return False
        if settings.term_coverage is None:
            return True
        texts = [content_as_text(h.chunk.get("content"), "content") for h, _ in found[:COVERAGE_CHUNKS]]
        coverage = await asyncio.to_thread(db.index.term_coverage, db.collection, query, texts)
        return coverage is None or coverage >= settings.term_coverage

    async def _has_unknown_term(self, db: VectorDB, query: str) -> bool:
        """Whether the question names something the collection never mentions: a term no row
        holds that is not a common word (the embedding model's vocabulary splits it into
        `unknown_term_pieces` or more word pieces: "meson2cmake", "coveralls", "sagemaker")."""
        if not db.index.capabilities(db.collection).keyword:
            return False
        pieces = self.settings.unknown_term_pieces
        terms = [t for t in dict.fromkeys(tokenize(query)) if db.embedder.tokenizer.count(t) >= pieces]

        def absent(term: str) -> bool:
            request = SearchRequest(mode="keyword", limit=1, text=term)
            return not db.index.search(db.collection, request)

        found = await asyncio.gather(*(asyncio.to_thread(absent, t) for t in terms))
        return any(found)

    async def _asks_for_overview(self, embedder: Embedder, vector: np.ndarray) -> bool:
        limit = self.settings.overview_similarity
        if limit is None:
            return False
        prototypes = self._overview_vectors.get(embedder.model_id)
        if prototypes is None:
            embedded = await asyncio.to_thread(embedder.embed, list(OVERVIEW_QUESTIONS))
            prototypes = np.asarray(embedded, dtype=np.float32)
            prototypes /= np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
            self._overview_vectors[embedder.model_id] = prototypes
        query = np.asarray(vector, dtype=np.float32)
        return float(np.max(prototypes @ query)) / max(float(np.linalg.norm(query)), 1e-12) >= limit


def format_knowledge_search(hits: list[Hit], query: str, config: RAGQueryConfig, tokenizer: Any) -> RAGResult:
    """The exact text Llama Stack's knowledge_search returns (0.2.x), so prompts built on it still work."""
    items = [{"type": "text", "text": f"knowledge_search tool found {len(hits)} chunks:\nBEGIN of knowledge_search tool results.\n"}]
    used: list[Hit] = []
    tokens = 0
    for i, hit in enumerate(hits):
        metadata = dict(hit.chunk.get("metadata") or {})
        size = metadata.get("token_count")
        if not isinstance(size, int):
            size = tokenizer.count(content_as_text(hit.chunk.get("content"), "content"))
        tokens += size + int(metadata.get("metadata_token_count") or 0)
        if tokens > config.max_tokens_in_context:
            break
        shown = {k: v for k, v in metadata.items() if k not in HIDDEN_METADATA}
        items.append({"type": "text", "text": render(config.chunk_template, i + 1, hit.chunk.get("content"),
                                                     metadata, shown)})
        used.append(hit)
    items.append({"type": "text", "text": "END of knowledge_search tool results.\n"})
    items.append({
        "type": "text",
        "text": f'The above results were retrieved to help answer the user\'s query: "{query}". '
        "Use them as supporting information only in answering this query.\n",
    })
    return RAGResult(
        hits=used,
        content=items,
        metadata={
            "document_ids": [h.document_id for h in used],
            "chunks": [content_as_text(h.chunk.get("content"), "content") for h in used],
            "scores": [h.score for h in used],
            # The ranking score is an RRF value (~0.03) in hybrid mode; people read cosine better.
            "similarities": [None if h.similarity is None else round(h.similarity, 4) for h in used],
        },
    )
