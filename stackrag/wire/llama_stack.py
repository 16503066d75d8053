"""Request and response shapes of the classic Llama Stack API (0.2.x), as llama-stack-client sends
and reads them. Optional fields accept JSON null: the Stainless client sends explicit None."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Lenient(BaseModel):
    """Newer clients add fields; unknown keys are ignored rather than refused."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class ListResponse(BaseModel, Generic[T]):
    data: list[T]


# -- inspect ---------------------------------------------------------------------------------


class HealthInfo(BaseModel):
    status: str


class VersionInfo(BaseModel):
    version: str


class ProviderHealth(BaseModel):
    status: str
    message: str | None = None


class ProviderInfo(BaseModel):
    api: str
    provider_id: str
    provider_type: str
    config: dict[str, Any]
    health: ProviderHealth


class RouteInfo(BaseModel):
    route: str
    method: str
    provider_types: list[str]


class Resource(Lenient):
    """What every registered object carries in Llama Stack (models, vector DBs, tools, ...)."""

    identifier: str
    provider_resource_id: str
    provider_id: str
    owner: dict[str, Any] | None = None


# -- models ----------------------------------------------------------------------------------


class Model(Resource):
    type: Literal["model"] = "model"
    metadata: dict[str, Any] = Field(default_factory=dict)
    model_type: str = "llm"


class RegisterModelRequest(Lenient):
    model_id: str
    provider_model_id: str | None = None
    provider_id: str | None = None
    metadata: dict[str, Any] | None = None
    model_type: Literal["llm", "embedding"] | None = None


# -- vector DBs ------------------------------------------------------------------------------


class VectorDB(Resource):
    type: Literal["vector_db"] = "vector_db"
    embedding_model: str
    embedding_dimension: int
    vector_db_name: str | None = None


class RegisterVectorDBRequest(Lenient):
    vector_db_id: str
    embedding_model: str
    embedding_dimension: int | None = 384
    provider_id: str | None = None
    provider_vector_db_id: str | None = None
    vector_db_name: str | None = None


# -- vector io -------------------------------------------------------------------------------


class ChunkIn(Lenient):
    content: Any
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedding: list[float] | None = None
    chunk_metadata: dict[str, Any] | None = None


class Chunk(BaseModel):
    content: Any
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedding: list[float] | None = None


class InsertChunksRequest(Lenient):
    vector_db_id: str
    chunks: list[ChunkIn]
    ttl_seconds: int | None = None


class QueryChunksRequest(Lenient):
    vector_db_id: str
    query: Any
    params: dict[str, Any] | None = None


class QueryChunksResponse(BaseModel):
    chunks: list[Chunk]
    scores: list[float]


# -- RAG tool --------------------------------------------------------------------------------


class RAGDocument(Lenient):
    document_id: str
    content: Any
    mime_type: str | None = None
    metadata: dict[str, Any] | None = None


class RAGInsertRequest(Lenient):
    documents: list[RAGDocument]
    vector_db_id: str
    chunk_size_in_tokens: int | None = 512


class RAGQueryRequest(Lenient):
    content: Any
    vector_db_ids: list[str]
    query_config: dict[str, Any] | None = None


class TextContentItem(BaseModel):
    type: Literal["text"] = "text"
    text: str


class RAGQueryResult(BaseModel):
    content: list[TextContentItem] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


# -- tools -----------------------------------------------------------------------------------


class ToolParameter(BaseModel):
    name: str
    parameter_type: str
    description: str
    required: bool = True
    default: Any = None


class Tool(Resource):
    type: Literal["tool"] = "tool"
    toolgroup_id: str
    description: str
    parameters: list[ToolParameter]
    metadata: dict[str, Any] | None = None


class ToolGroup(Resource):
    type: Literal["tool_group"] = "tool_group"
    mcp_endpoint: dict[str, Any] | None = None
    args: dict[str, Any] | None = None


# -- inference -------------------------------------------------------------------------------


class ChatCompletionRequest(Lenient):
    model_id: str
    messages: list[dict[str, Any]]
    sampling_params: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    tool_prompt_format: str | None = None
    response_format: dict[str, Any] | None = None
    stream: bool | None = False
    logprobs: dict[str, Any] | None = None
    tool_config: dict[str, Any] | None = None


class CompletionRequest(Lenient):
    model_id: str
    content: Any
    sampling_params: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    stream: bool | None = False
    logprobs: dict[str, Any] | None = None


class EmbeddingsRequest(Lenient):
    model_id: str
    contents: list[Any]
    text_truncation: str | None = "none"
    output_dimension: int | None = None
    task_type: str | None = None


class EmbeddingsResponse(BaseModel):
    embeddings: list[list[float]]


# -- agents ----------------------------------------------------------------------------------


class CreateAgentRequest(Lenient):
    agent_config: dict[str, Any]


class AgentCreated(BaseModel):
    agent_id: str


class CreateSessionRequest(Lenient):
    session_name: str


class SessionCreated(BaseModel):
    session_id: str


class CreateTurnRequest(Lenient):
    messages: list[dict[str, Any]]
    stream: bool | None = False
    documents: list[Any] | None = None
    toolgroups: list[Any] | None = None
    tool_config: dict[str, Any] | None = None


class PaginatedList(BaseModel):
    data: list[dict[str, Any]]
    has_more: bool = False
    url: str | None = None


# -- tool runtime ----------------------------------------------------------------------------


class InvokeToolRequest(Lenient):
    tool_name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ToolInvocationResult(BaseModel):
    content: Any = None
    error_message: str | None = None
    error_code: int | None = None
    metadata: dict[str, Any] | None = None


class ToolDef(BaseModel):
    name: str
    description: str
    parameters: list[ToolParameter]
    metadata: dict[str, Any] | None = None
