"""vector-io: ready-made chunks (with or without their own embeddings) in, nearest chunks out."""

from __future__ import annotations

from typing import Any

from ..content.text import content_as_text
from ..providers.protocols import Hit
from ..wire.llama_stack import ChunkIn, QueryParams
from .ingestion import Ingestion, InsertStats
from .retrieval import Retrieval
from .vector_dbs import VectorDBService


class VectorIOService:
    def __init__(self, vector_dbs: VectorDBService, ingestion: Ingestion, retrieval: Retrieval):
        self._dbs = vector_dbs
        self._ingestion = ingestion
        self._retrieval = retrieval

    async def insert(self, vector_db_id: str, chunks: list[ChunkIn]) -> InsertStats:
        db = self._dbs.open(vector_db_id)
        return await self._ingestion.insert_chunks(db, [c.model_dump(exclude_none=True) for c in chunks])

    async def query(self, vector_db_id: str, query: Any, params: QueryParams | None) -> list[Hit]:
        db = self._dbs.open(vector_db_id)
        text = content_as_text(query, "query")
        return await self._retrieval.search(db, text, self._retrieval.search_params(params))

