"""Retrieval: vector-io queries over one vector DB, and the knowledge_search tool over several."""

from __future__ import annotations

import asyncio
import string
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import RetrievalSettings
from ..errors import BadRequest
from ..providers.protocols import Embedder, Hit, SearchRequest, VectorIndex
from .records import VectorDBRecord
from ..content.text import content_as_text

MODES = ("vector", "keyword", "hybrid")
MAX_CHUNKS_LIMIT = 1000
DEFAULT_CHUNK_TEMPLATE = "Result {index}\nContent: {chunk.content}\nMetadata: {metadata}\n"
# The only fields a chunk_template may use; anything else (attribute walks such as
# {chunk.__class__}) would let a request read server internals through str.format.
TEMPLATE_FIELDS = {"index", "chunk.content", "chunk.metadata", "metadata"}
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


@dataclass
class SearchParams:
    max_chunks: int = 3
    score_threshold: float = 0.0
    mode: str = "vector"
    ranker: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: dict[str, Any] | None, default_max_chunks: int = 3, default_mode: str = "vector",
              default_ranker: dict[str, Any] | None = None) -> SearchParams:
        params = params or {}
        max_chunks = params.get("max_chunks")
        max_chunks = default_max_chunks if max_chunks is None else max_chunks
        if not isinstance(max_chunks, int) or isinstance(max_chunks, bool) or not 1 <= max_chunks <= MAX_CHUNKS_LIMIT:
            raise BadRequest(f"params.max_chunks must be an integer from 1 to {MAX_CHUNKS_LIMIT}")
        threshold = params.get("score_threshold")
        threshold = 0.0 if threshold is None else threshold
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
            raise BadRequest("params.score_threshold must be a number")
        mode = params.get("mode") or default_mode
        if mode not in MODES:
            raise BadRequest(f"params.mode must be one of {', '.join(MODES)}, not {mode!r}")
        return cls(max_chunks, float(threshold), mode, parse_ranker(params.get("ranker"), default_ranker))


def parse_ranker(ranker: Any, default: dict[str, Any] | None = None) -> dict[str, Any]:
    if ranker is None:
        ranker = default or {"type": "rrf", "impact_factor": 60.0}
    if not isinstance(ranker, dict):
        raise BadRequest("ranker must be an object such as {'type': 'rrf', 'impact_factor': 60}")
    kind = ranker.get("type", "rrf")
    if kind == "rrf":
        factor = ranker.get("impact_factor", 60.0)
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
            raise BadRequest("ranker.impact_factor must be a positive number")
        return {"type": "rrf", "impact_factor": float(factor)}
    if kind == "weighted":
        alpha = ranker.get("alpha", 0.5)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
            raise BadRequest("ranker.alpha must be a number from 0 to 1 (1 = vector only)")
        return {"type": "weighted", "alpha": float(alpha)}
    raise BadRequest(f"ranker.type must be 'rrf' or 'weighted', not {kind!r}")


def check_chunk_template(template: str) -> str:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise BadRequest(f"query_config.chunk_template is not a valid format string: {exc}") from exc
    if "index" not in fields or "chunk.content" not in fields:
        raise BadRequest("query_config.chunk_template must contain {index} and {chunk.content}")
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise BadRequest(
            f"query_config.chunk_template may only use {', '.join(sorted(TEMPLATE_FIELDS))}; "
            f"remove {', '.join(sorted(unknown))}"
        )
    return template


@dataclass
class RAGQueryConfig:
    max_tokens_in_context: int = 4096
    max_chunks: int = 5
    chunk_template: str = DEFAULT_CHUNK_TEMPLATE
    mode: str = "vector"
    ranker: dict[str, Any] = field(default_factory=dict)
    separator: str = " "

    @classmethod
    def parse(cls, config: dict[str, Any] | None, defaults: RetrievalSettings | None = None) -> RAGQueryConfig:
        config = config or {}
        defaults = defaults or RetrievalSettings()
        generator = config.get("query_generator_config") or {"type": "default", "separator": " "}
        if generator.get("type", "default") != "default":
            raise BadRequest(
                "query_config.query_generator_config.type 'llm' is not supported yet; use {'type': 'default'}"
            )
        search = SearchParams.parse(
            {"max_chunks": config.get("max_chunks"), "mode": config.get("mode"), "ranker": config.get("ranker")},
            default_max_chunks=5, default_mode=defaults.mode, default_ranker=defaults.ranker,
        )
        max_tokens = config.get("max_tokens_in_context")
        max_tokens = 4096 if max_tokens is None else max_tokens
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadRequest("query_config.max_tokens_in_context must be a positive integer")
        template = config.get("chunk_template")
        template = DEFAULT_CHUNK_TEMPLATE if template is None else check_chunk_template(template)
        return cls(max_tokens, search.max_chunks, template, search.mode, search.ranker,
                   str(generator.get("separator", " ")))


@dataclass
class RAGResult:
    content: list[dict[str, str]] | None
    metadata: dict[str, Any]
    # The chunks behind `content`, for callers inside the server (the agent's prompt).
    hits: list[Hit] = field(default_factory=list)


class _TemplateChunk:
    """What `{chunk.content}` and `{chunk.metadata}` see in a chunk_template."""

    __slots__ = ("content", "metadata")

    def __init__(self, content: Any, metadata: dict[str, Any]):
        self.content = content
        self.metadata = metadata


class Retrieval:
    def __init__(self, settings: RetrievalSettings | None = None):
        self.settings = settings or RetrievalSettings()
        self._overview_vectors: dict[str, np.ndarray] = {}

    def search_params(self, params: dict[str, Any] | None, default_max_chunks: int = 3) -> SearchParams:
        # vector-io query keeps Llama Stack's default mode: its scores are cosine similarities that
        # clients compare with score_threshold; hybrid (fused-rank) scores would break that contract.
        return SearchParams.parse(params, default_max_chunks, "vector", self.settings.ranker)

    def rag_config(self, config: dict[str, Any] | None) -> RAGQueryConfig:
        return RAGQueryConfig.parse(config, self.settings)

    async def search(
        self,
        vector_db: VectorDBRecord,
        index: VectorIndex,
        embedder: Embedder,
        query: str,
        params: SearchParams,
        document_ids: list[str] | None = None,
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        if not query.strip():
            raise BadRequest("query must not be empty")
        if vector is None and (params.mode != "keyword" or not index.capabilities(vector_db.collection).keyword):
            vector = (await asyncio.to_thread(embedder.embed, [query]))[0]
        request = SearchRequest(mode=params.mode, limit=params.max_chunks, vector=vector, text=query,
                                ranker=params.ranker, document_ids=document_ids)
        hits = await asyncio.to_thread(index.search, vector_db.collection, request)
        return [h for h in hits if h.score >= params.score_threshold]

    async def knowledge_search(
        self,
        targets: list[tuple[VectorDBRecord, VectorIndex, Embedder]],
        content: Any,
        config: RAGQueryConfig,
    ) -> RAGResult:
        """Llama Stack's knowledge_search, with two judgements of our own (RetrievalSettings):
        a question about the collection as a whole ("what topics are explained?") gets the opening
        passage of each document, and a question nothing in the documents is similar enough to gets
        no chunks at all (content None) rather than the least bad ones."""
        if not targets:
            raise BadRequest(
                "No vector DBs were provided to the knowledge search tool. Please provide at least one vector DB ID."
            )
        query = content_as_text(content, "content", config.separator)
        if not query.strip():
            raise BadRequest("query must not be empty")
        embedder = targets[0][2]
        vector = None
        if all(t[2] is embedder for t in targets) and config.mode != "keyword":
            vector = (await asyncio.to_thread(embedder.embed, [query]))[0]
        params = SearchParams(config.max_chunks, 0.0, config.mode, config.ranker)
        if vector is not None and self._asks_for_overview(embedder, vector):
            heads = await asyncio.gather(
                *(asyncio.to_thread(index.document_heads, db.collection, config.max_chunks) for db, index, _ in targets)
            )
            picked = [h for group in heads for h in group][: config.max_chunks]
            if picked:
                return format_knowledge_search(picked, query, config, embedder.tokenizer)
        results = await asyncio.gather(*(self.search(db, index, emb, query, params, vector=vector)
                                         for db, index, emb in targets))
        found = sorted(((h, db, index) for (db, index, _), hits in zip(targets, results) for h in hits),
                       key=lambda t: t[0].score, reverse=True)[: config.max_chunks]
        if found and not await self._relevant(query, found):
            found = []
        picked = [h for h, _, _ in found]
        if not picked:
            return RAGResult(content=None, metadata={"document_ids": [], "chunks": [], "scores": [],
                                                     "similarities": []})
        return format_knowledge_search(picked, query, config, embedder.tokenizer)

    async def _relevant(self, query: str, found: list[tuple[Hit, VectorDBRecord, VectorIndex]]) -> bool:
        """Whether the best chunks are about the question at all (docs/retrieval.md, "Knowing when
        nothing matches"): their cosine, and for a middling cosine the question's words they hold."""
        settings = self.settings
        similarities = [h.similarity for h, _, _ in found if h.similarity is not None]
        if not similarities:
            return True
        best = max(similarities)
        if settings.relevance_threshold is not None and best < settings.relevance_threshold:
            return False
        if settings.term_coverage is None or best >= settings.trusted_similarity:
            return True
        _, db, index = found[0]
        texts = [content_as_text(h.chunk.get("content"), "content") for h, _, _ in found[:COVERAGE_CHUNKS]]
        coverage = await asyncio.to_thread(index.term_coverage, db.collection, query, texts)
        return coverage is None or coverage >= settings.term_coverage

    def _asks_for_overview(self, embedder: Embedder, vector: np.ndarray) -> bool:
        limit = self.settings.overview_similarity
        if limit is None:
            return False
        prototypes = self._overview_vectors.get(embedder.model_id)
        if prototypes is None:
            prototypes = np.asarray(embedder.embed(list(OVERVIEW_QUESTIONS)), dtype=np.float32)
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
        chunk = _TemplateChunk(hit.chunk.get("content"), metadata)
        items.append({"type": "text", "text": config.chunk_template.format(index=i + 1, chunk=chunk, metadata=shown)})
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
