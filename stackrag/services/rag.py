"""The RAG tool (builtin::rag): insert documents into vector DBs and search them with
knowledge_search. One service for the rag-tool routes, tool-runtime/invoke and the agents alike."""

from __future__ import annotations

from typing import Any

from ..config import DEFAULT_EMBEDDING_MODEL
from ..content.text import plain
from ..errors import NotFound
from ..wire.llama_stack import RAGDocument, RAGQueryConfig as RAGQueryConfigIn
from .ingestion import Document, Ingestion, InsertStats
from .queries import QueryWriter
from .retrieval import RAGQueryConfig, RAGResult, Retrieval
from .vector_dbs import VectorDBService


def document_of(doc: RAGDocument) -> Document:
    """A wire document as ingestion reads it (content back to its JSON shape: text, items or {uri})."""
    return Document(doc.document_id, plain(doc.content), doc.mime_type, doc.metadata)


class RAGService:
    def __init__(self, vector_dbs: VectorDBService, ingestion: Ingestion, retrieval: Retrieval, queries: QueryWriter):
        self._dbs = vector_dbs
        self._ingestion = ingestion
        self._retrieval = retrieval
        self._queries = queries

    async def insert(self, vector_db_id: str, documents: list[RAGDocument], chunk_size: int | None) -> InsertStats:
        db = self._dbs.open(vector_db_id)
        return await self._ingestion.insert_documents(db, [document_of(d) for d in documents], chunk_size)

    async def insert_into_own(self, vector_db_id: str, documents: list[RAGDocument]) -> InsertStats:
        """Insert into a vector DB this server keeps for someone (an agent session's documents),
        registering it with the default embedding model the first time."""
        try:
            self._dbs.get(vector_db_id)
        except NotFound:
            await self._dbs.register(vector_db_id, DEFAULT_EMBEDDING_MODEL, None, None, None)
        return await self.insert(vector_db_id, documents, None)

    async def drop_own(self, vector_db_id: str) -> None:
        try:
            await self._dbs.unregister(vector_db_id)
        except NotFound:
            pass

    async def query(self, vector_db_ids: list[str], content: Any, config: RAGQueryConfigIn | None) -> RAGResult:
        return await self.knowledge_search(vector_db_ids, content, self.config(config))

    async def knowledge_search(self, vector_db_ids: list[str], content: Any, config: RAGQueryConfig) -> RAGResult:
        dbs = [self._dbs.open(vector_db_id) for vector_db_id in vector_db_ids]
        if config.query_model and config.query_template:
            content = await self._queries.generated(config.query_model, config.query_template, content)
        return await self._retrieval.knowledge_search(dbs, content, config)

    def check_visible(self, vector_db_ids: list[str]) -> None:
        """404 for a vector DB the caller cannot see (unknown, or another key's)."""
        for vector_db_id in vector_db_ids:
            self._dbs.get(vector_db_id)

    def config(self, config: RAGQueryConfigIn | None) -> RAGQueryConfig:
        """A query config with its defaults; a generator's model that is not a chat model is a 4xx now."""
        checked = self._retrieval.rag_config(config)
        if checked.query_model:
            self._queries.check_model(checked.query_model)
        return checked

