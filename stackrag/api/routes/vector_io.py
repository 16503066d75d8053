"""/v1/vector-io: insert ready-made chunks (with or without embeddings) and query them."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ...services.stack import Stack
from ...content.text import content_as_text
from ...wire.llama_stack import Chunk, InsertChunksRequest, QueryChunksRequest, QueryChunksResponse
from ..deps import get_stack

router = APIRouter()


@router.post("/v1/vector-io/insert")
async def insert_chunks(body: InsertChunksRequest, stack: Stack = Depends(get_stack)) -> None:
    vector_db, index, embedder = stack.target(body.vector_db_id)
    chunks = [c.model_dump() for c in body.chunks]
    await stack.ingestion.insert_chunks(vector_db, index, embedder, chunks)


@router.post("/v1/vector-io/query", response_model=QueryChunksResponse)
async def query_chunks(body: QueryChunksRequest, stack: Stack = Depends(get_stack)) -> QueryChunksResponse:
    vector_db, index, embedder = stack.target(body.vector_db_id)
    params = stack.retrieval.search_params(body.params)
    hits = await stack.retrieval.search(vector_db, index, embedder, content_as_text(body.query, "query"), params)
    return QueryChunksResponse(
        chunks=[Chunk(content=h.chunk.get("content"), metadata=h.chunk.get("metadata") or {}) for h in hits],
        scores=[h.score for h in hits],
    )
