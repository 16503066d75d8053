"""The built-in RAG toolgroup and its tools, as Llama Stack 0.2.x lists them."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import NotFound

RAG_TOOLGROUP = "builtin::rag"
RAG_PROVIDER = "rag-runtime"


@dataclass(frozen=True)
class ToolParam:
    name: str
    parameter_type: str
    description: str
    required: bool = True


@dataclass(frozen=True)
class ToolSpec:
    name: str
    toolgroup_id: str
    description: str
    parameters: tuple[ToolParam, ...] = field(default_factory=tuple)
    # Whether running it changes stored data: a read-only key may not invoke it (api/access.py).
    writes: bool = False


RAG_TOOLS = (
    ToolSpec("insert_into_memory", RAG_TOOLGROUP, "Insert documents into memory", writes=True),
    ToolSpec(
        "knowledge_search",
        RAG_TOOLGROUP,
        "Search for information in a database.",
        (ToolParam("query", "string", "The query to search for. Can be a natural language sentence or keywords."),),
    ),
)

TOOLGROUPS = {RAG_TOOLGROUP: RAG_TOOLS}


def tool_named(name: str) -> ToolSpec:
    for tools in TOOLGROUPS.values():
        for spec in tools:
            if spec.name == name:
                return spec
    known = ", ".join(t.name for tools in TOOLGROUPS.values() for t in tools)
    raise NotFound(f"Tool {name!r} not found; this server runs {known}")
