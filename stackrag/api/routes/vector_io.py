"""/v1/vector-io: insert ready-made chunks (with or without embeddings) and query them."""

from __future__ import annotations

from fastapi import Depends

from ...services.stack import Stack
from ...wire.llama_stack import Chunk, InsertChunksRequest, QueryChunksRequest, QueryChunksResponse
from ..access import READ, WRITE
from ..deps import get_stack
from .. import routing

router = routing.router()


@router.post("/v1/vector-io/insert", openapi_extra=WRITE)
async def insert_chunks(body: InsertChunksRequest, stack: Stack = Depends(get_stack)) -> None:
    await stack.vector_io.insert(body.target, body.chunks)


@router.post("/v1/vector-io/query", response_model=QueryChunksResponse,
             openapi_extra={**READ, **routing.SEARCH_BODY})
async def query_chunks(body: QueryChunksRequest, stack: Stack = Depends(get_stack)) -> QueryChunksResponse:
    hits = await stack.vector_io.query(body.target, body.query, body.params)
    return QueryChunksResponse(
        chunks=[Chunk(content=h.chunk.get("content"), metadata=h.chunk.get("metadata") or {}) for h in hits],
        scores=[h.score for h in hits],
    )
