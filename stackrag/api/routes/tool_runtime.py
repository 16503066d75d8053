"""/v1/tool-runtime: invoke a built-in tool, list a toolgroup's tool definitions; /v1/shields."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from ...services.stack import Stack
from ...services.toolgroups import TOOLGROUPS
from ...errors import BadRequest, NotFound
from ...wire.llama_stack import InvokeToolRequest, ListResponse, ToolDef, ToolInvocationResult, ToolParameter
from ..deps import get_stack

router = APIRouter()


@router.post("/v1/tool-runtime/invoke", response_model=ToolInvocationResult)
async def invoke_tool(body: InvokeToolRequest, stack: Stack = Depends(get_stack)) -> ToolInvocationResult:
    kwargs = body.kwargs
    if body.tool_name == "knowledge_search":
        ids = kwargs.get("vector_db_ids")
        if not isinstance(ids, list):
            raise BadRequest("kwargs.vector_db_ids must be a list of vector DB ids")
        config = stack.retrieval.rag_config(kwargs.get("query_config"))
        result = await stack.knowledge_search(ids, kwargs.get("query") or "", config)
        return ToolInvocationResult(content=result.content, metadata=result.metadata)
    if body.tool_name == "insert_into_memory":
        vector_db, index, embedder = stack.target(str(kwargs.get("vector_db_id") or ""))
        documents = kwargs.get("documents") or []
        stats = await stack.ingestion.insert_documents(vector_db, index, embedder, documents,
                                                       int(kwargs.get("chunk_size_in_tokens") or 512))
        return ToolInvocationResult(content=None, metadata={"chunks": stats.chunks})
    raise NotFound(f"Tool {body.tool_name!r} not found; this server runs knowledge_search and insert_into_memory")


@router.get("/v1/tool-runtime/list-tools", response_model=ListResponse[ToolDef])
async def list_runtime_tools(tool_group_id: str | None = None, mcp_endpoint: Any = None) -> ListResponse[ToolDef]:
    groups = [tool_group_id.split("/")[0]] if tool_group_id else list(TOOLGROUPS)
    if any(g not in TOOLGROUPS for g in groups):
        raise NotFound(f"Tool group {tool_group_id!r} not found")
    return ListResponse(data=[
        ToolDef(name=t.name, description=t.description, parameters=[ToolParameter(**vars(p)) for p in t.parameters])
        for g in groups for t in TOOLGROUPS[g]
    ])


@router.get("/v1/shields")
async def list_shields() -> dict[str, Any]:
    return {"data": []}
