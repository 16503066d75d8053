"""/v1/toolgroups and /v1/tools: the built-in RAG toolgroup."""

from __future__ import annotations


from ...services.toolgroups import RAG_PROVIDER, TOOLGROUPS, ToolSpec, tool_named
from ...errors import NotFound
from ...wire.llama_stack import ListResponse, Tool, ToolGroup, ToolParameter
from .. import routing

router = routing.router()


def _tool(spec: ToolSpec) -> Tool:
    return Tool(
        identifier=spec.name,
        provider_resource_id=spec.name,
        provider_id=RAG_PROVIDER,
        toolgroup_id=spec.toolgroup_id,
        description=spec.description,
        parameters=[ToolParameter(**vars(p)) for p in spec.parameters],
    )


def _group(group_id: str) -> ToolGroup:
    return ToolGroup(identifier=group_id, provider_resource_id=group_id, provider_id=RAG_PROVIDER)


def _tools_of(toolgroup_id: str) -> tuple[ToolSpec, ...]:
    # Agents may name one tool of a group ("builtin::rag/knowledge_search").
    group_id, _, tool_name = toolgroup_id.partition("/")
    if group_id not in TOOLGROUPS:
        raise NotFound(f"Tool group {toolgroup_id!r} not found; GET /v1/toolgroups lists them")
    tools = TOOLGROUPS[group_id]
    return tuple(t for t in tools if t.name == tool_name) if tool_name else tools


@router.get("/v1/toolgroups", response_model=ListResponse[ToolGroup])
async def list_toolgroups() -> ListResponse[ToolGroup]:
    return ListResponse(data=[_group(g) for g in TOOLGROUPS])


@router.get("/v1/toolgroups/{toolgroup_id:path}", response_model=ToolGroup)
async def get_toolgroup(toolgroup_id: str) -> ToolGroup:
    _tools_of(toolgroup_id)
    return _group(toolgroup_id)


@router.get("/v1/tools", response_model=ListResponse[Tool])
async def list_tools(toolgroup_id: str | None = None) -> ListResponse[Tool]:
    groups = [toolgroup_id] if toolgroup_id else list(TOOLGROUPS)
    return ListResponse(data=[_tool(t) for g in groups for t in _tools_of(g)])


@router.get("/v1/tools/{tool_name:path}", response_model=Tool)
async def get_tool(tool_name: str) -> Tool:
    return _tool(tool_named(tool_name))
