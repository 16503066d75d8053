"""/v1/tool-runtime/rag-tool: insert documents and run knowledge_search."""

from __future__ import annotations

from fastapi import Depends, Response

from ...services.stack import Stack
from ...wire.llama_stack import RAGInsertRequest, RAGQueryRequest, RAGQueryResult
from ..access import READ, WRITE
from ..deps import get_stack
from .. import routing

router = routing.router()


@router.post("/v1/tool-runtime/rag-tool/insert", openapi_extra=WRITE)
async def rag_insert(body: RAGInsertRequest, response: Response, stack: Stack = Depends(get_stack)) -> None:
    stats = await stack.rag.insert(body.vector_db_id, body.documents, body.chunk_size_in_tokens)
    # The body stays null as in Llama Stack; the counts ride along for progress bars.
    response.headers["x-stackrag-chunks"] = str(stats.chunks)
    response.headers["x-stackrag-windows"] = str(stats.windows)


@router.post("/v1/tool-runtime/rag-tool/query", response_model=RAGQueryResult,
             openapi_extra={**READ, **routing.SEARCH_BODY})
async def rag_query(body: RAGQueryRequest, stack: Stack = Depends(get_stack)) -> RAGQueryResult:
    result = await stack.rag.query(body.vector_db_ids, body.content, body.query_config)
    return RAGQueryResult.model_validate({"content": result.content, "metadata": result.metadata})
