"""/v1/tool-runtime/rag-tool: insert documents and run knowledge_search."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from ...services.stack import Stack
from ...wire.llama_stack import RAGInsertRequest, RAGQueryRequest, RAGQueryResult
from ..deps import get_stack

router = APIRouter()


@router.post("/v1/tool-runtime/rag-tool/insert")
async def rag_insert(body: RAGInsertRequest, response: Response, stack: Stack = Depends(get_stack)) -> None:
    vector_db, index, embedder = stack.target(body.vector_db_id)
    documents = [d.model_dump() for d in body.documents]
    chunk_size = 512 if body.chunk_size_in_tokens is None else body.chunk_size_in_tokens
    stats = await stack.ingestion.insert_documents(vector_db, index, embedder, documents, chunk_size)
    # The body stays null as in Llama Stack; the counts ride along for progress bars.
    response.headers["x-stackrag-chunks"] = str(stats.chunks)
    response.headers["x-stackrag-windows"] = str(stats.windows)


@router.post("/v1/tool-runtime/rag-tool/query", response_model=RAGQueryResult)
async def rag_query(body: RAGQueryRequest, stack: Stack = Depends(get_stack)) -> RAGQueryResult:
    config = stack.retrieval.rag_config(body.query_config)
    result = await stack.knowledge_search(body.vector_db_ids, body.content, config)
    return RAGQueryResult.model_validate({"content": result.content, "metadata": result.metadata})
