"""/v1/tool-runtime: invoke a built-in tool, list a toolgroup's tool definitions; /v1/shields."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from pydantic import ValidationError

from ...errors import NotFound, bad_request_from
from ...services.stack import Stack
from ...services.toolgroups import TOOLGROUPS, tool_named
from ...wire.llama_stack import (
    InsertIntoMemoryArgs,
    InvokeToolRequest,
    KnowledgeSearchArgs,
    ListResponse,
    ToolDef,
    ToolInvocationResult,
    ToolParameter,
)
from ..access import BY_TOOL, require_write
from ..deps import get_stack
from .. import routing

router = routing.router()


@router.post("/v1/tool-runtime/invoke", response_model=ToolInvocationResult, openapi_extra=BY_TOOL)
async def invoke_tool(body: InvokeToolRequest, request: Request, stack: Stack = Depends(get_stack)) -> ToolInvocationResult:
    tool = tool_named(body.tool_name)
    if tool.writes:
        require_write(request, f"the tool {tool.name}")
    try:
        if tool.name == "knowledge_search":
            search = KnowledgeSearchArgs.model_validate(body.kwargs)
            result = await stack.rag.query(search.vector_db_ids, search.query, search.query_config)
            return ToolInvocationResult(content=result.content, metadata=result.metadata)
        insert = InsertIntoMemoryArgs.model_validate(body.kwargs)
    except ValidationError as exc:
        raise bad_request_from(exc, "kwargs") from None
    stats = await stack.rag.insert(insert.vector_db_id, insert.documents, insert.chunk_size_in_tokens)
    return ToolInvocationResult(content=None, metadata={"chunks": stats.chunks})


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
