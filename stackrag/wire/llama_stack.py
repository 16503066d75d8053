"""Request and response shapes of the classic Llama Stack API (0.2.x), as llama-stack-client sends
and reads them. Optional fields accept JSON null: the Stainless client sends explicit None.

Nested shapes are typed too (content items, messages, sampling, query configs, rankers, tool
arguments), so a malformed body is a 400 naming the field, never a 500 from deep inside.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from ..content.templates import check_chunk_template, check_generator_template
from .common import (
    bounded_list,
    MAX_LIST,
    MAX_QUERIES,
    MAX_QUERY_CHARS,
    DocumentId,
    Int,
    IntOrDigits,
    Lenient,
    Number,
    RequestBody,
    ResourceId,
    check_document_id,
)
from .response_format import LlamaResponseFormat

T = TypeVar("T")


class ListResponse(BaseModel, Generic[T]):
    data: list[T]


# -- content ---------------------------------------------------------------------------------


class TextItem(Lenient):
    type: Literal["text"]
    text: str


class ImageItem(Lenient):
    type: Literal["image"]
    image: dict[str, Any]


ContentItem = Annotated[Union[TextItem, ImageItem], Field(discriminator="type")]


class URL(Lenient):
    uri: Annotated[str, Field(min_length=1, max_length=8192)]


# A message's or a query's content: text, one item, or a list of items.
InterleavedContent = Union[str, ContentItem, bounded_list(ContentItem, MAX_LIST)]


def _query_size(value: Any) -> Any:
    items = value if isinstance(value, list) else [value]
    size = sum(len(i) if isinstance(i, str) else len(getattr(i, "text", "")) for i in items)
    if size > MAX_QUERY_CHARS:
        raise ValueError(f"a query may hold at most {MAX_QUERY_CHARS} characters, not {size}")
    return value


# What is searched for: the same shapes, bounded (a query is a question, not a document).
QueryContent = Annotated[Union[str, ContentItem, bounded_list(ContentItem, MAX_QUERIES)],
                         AfterValidator(_query_size)]
# A document's content may also be a URL to fetch.
DocumentContent = Union[str, URL, ContentItem, bounded_list(ContentItem, MAX_LIST)]


class TextContentItem(BaseModel):
    type: Literal["text"] = "text"
    text: str


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


class RegisterModelRequest(RequestBody):
    model_id: ResourceId
    provider_model_id: ResourceId | None = None
    provider_id: ResourceId | None = None
    metadata: dict[str, Any] | None = None
    model_type: Literal["llm", "embedding"] | None = None


# -- vector DBs ------------------------------------------------------------------------------


class VectorDB(Resource):
    type: Literal["vector_db"] = "vector_db"
    embedding_model: str
    embedding_dimension: int
    vector_db_name: str | None = None


class RegisterVectorDBRequest(RequestBody):
    vector_db_id: ResourceId
    embedding_model: ResourceId
    embedding_dimension: IntOrDigits | None = 384
    provider_id: ResourceId | None = None
    provider_vector_db_id: ResourceId | None = None
    vector_db_name: Annotated[str, Field(max_length=256)] | None = None


# -- search settings -------------------------------------------------------------------------


class RRFRanker(Lenient):
    type: Literal["rrf"] = "rrf"
    impact_factor: Annotated[Number, Field(gt=0)] = 60.0


class WeightedRanker(Lenient):
    type: Literal["weighted"]
    # 1 = vector only, 0 = keyword only.
    alpha: Annotated[Number, Field(ge=0, le=1)] = 0.5


Ranker = Annotated[Union[RRFRanker, WeightedRanker], Field(discriminator="type")]
SearchMode = Literal["vector", "keyword", "hybrid"]


class QueryParams(Lenient):
    """vector-io query params (Llama Stack's defaults: 3 chunks, threshold 0, vector mode)."""

    max_chunks: Annotated[Int, Field(ge=1, le=1000)] | None = None
    score_threshold: Number | None = None
    mode: SearchMode | None = None
    ranker: Ranker | None = None


class DefaultQueryGenerator(Lenient):
    type: Literal["default"] = "default"
    separator: Annotated[str, Field(max_length=64)] = " "


class LLMQueryGenerator(Lenient):
    type: Literal["llm"]
    model: ResourceId
    template: Annotated[str, Field(max_length=4096)]

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_generator_template(value)


QueryGenerator = Annotated[Union[DefaultQueryGenerator, LLMQueryGenerator], Field(discriminator="type")]


class RAGQueryConfig(Lenient):
    query_generator_config: QueryGenerator | None = None
    max_tokens_in_context: Annotated[Int, Field(ge=1, le=1_000_000)] | None = None
    max_chunks: Annotated[Int, Field(ge=1, le=1000)] | None = None
    chunk_template: Annotated[str, Field(max_length=4096)] | None = None
    mode: SearchMode | None = None
    ranker: Ranker | None = None

    @field_validator("chunk_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_chunk_template(value)


# -- vector io -------------------------------------------------------------------------------


class ChunkMetadata(Lenient):
    document_id: DocumentId | None = None
    chunk_id: Annotated[str, Field(max_length=256)] | None = None


class ChunkIn(Lenient):
    content: InterleavedContent
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedding: bounded_list(Number, 65_536) | None = None
    chunk_metadata: ChunkMetadata | None = None

    @field_validator("metadata")
    @classmethod
    def _counts(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        """The server itself reads these two keys (knowledge_search's token budget): typed at insert,
        so a bad value is refused here instead of breaking every later query that finds the chunk."""
        for key in ("token_count", "metadata_token_count"):
            value = metadata.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"metadata.{key} must be a non-negative integer")
        document_id = metadata.get("document_id")
        if document_id is not None:
            if not isinstance(document_id, str):
                raise ValueError("metadata.document_id must be a string")
            try:
                check_document_id(document_id)
            except ValueError as exc:
                raise ValueError(f"metadata.document_id {exc}") from None
        return metadata


class Chunk(BaseModel):
    content: Any
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedding: list[float] | None = None


class _VectorDBTarget(RequestBody):
    """Llama Stack 0.2 says vector_db_id, 0.7 says vector_store_id: either names the store."""

    vector_db_id: ResourceId | None = None
    vector_store_id: ResourceId | None = None

    @model_validator(mode="after")
    def _one_id(self) -> _VectorDBTarget:
        if self.vector_db_id is None and self.vector_store_id is None:
            raise ValueError("vector_db_id (or vector_store_id) is required")
        if self.vector_db_id is None:
            self.vector_db_id = self.vector_store_id
        return self

    @property
    def target(self) -> str:
        assert self.vector_db_id is not None
        return self.vector_db_id


class InsertChunksRequest(_VectorDBTarget):
    chunks: bounded_list(ChunkIn, 100_000, 1)
    ttl_seconds: Int | None = None


class QueryChunksRequest(_VectorDBTarget):
    query: QueryContent
    params: QueryParams | None = None


class QueryChunksResponse(BaseModel):
    chunks: list[Chunk]
    scores: list[float]


# -- RAG tool --------------------------------------------------------------------------------


class RAGDocument(Lenient):
    document_id: DocumentId
    content: DocumentContent
    mime_type: Annotated[str, Field(max_length=255)] | None = None
    metadata: dict[str, Any] | None = None


class RAGInsertRequest(RequestBody):
    documents: bounded_list(RAGDocument, MAX_LIST, 1)
    vector_db_id: ResourceId
    chunk_size_in_tokens: Int | None = None


class RAGQueryRequest(RequestBody):
    content: QueryContent
    vector_db_ids: bounded_list(ResourceId, 64)
    query_config: RAGQueryConfig | None = None


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


class ToolDef(BaseModel):
    name: str
    description: str
    parameters: list[ToolParameter]
    metadata: dict[str, Any] | None = None


class InvokeToolRequest(RequestBody):
    tool_name: Annotated[str, Field(min_length=1, max_length=256)]
    kwargs: dict[str, Any] = Field(default_factory=dict)


class KnowledgeSearchArgs(Lenient):
    """kwargs of the knowledge_search tool."""

    query: QueryContent
    vector_db_ids: bounded_list(ResourceId, 64, 1)
    query_config: RAGQueryConfig | None = None


class InsertIntoMemoryArgs(Lenient):
    """kwargs of the insert_into_memory tool."""

    vector_db_id: ResourceId
    documents: bounded_list(RAGDocument, MAX_LIST, 1)
    chunk_size_in_tokens: Int | None = None


class ToolInvocationResult(BaseModel):
    content: Any = None
    error_message: str | None = None
    error_code: int | None = None
    metadata: dict[str, Any] | None = None


# -- messages and inference ------------------------------------------------------------------


class ToolCall(Lenient):
    call_id: Annotated[str, Field(max_length=256)] = ""
    tool_name: str | dict[str, Any]
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    arguments_json: str | None = None


class UserMessage(Lenient):
    role: Literal["user"]
    content: InterleavedContent
    context: InterleavedContent | None = None


class SystemMessage(Lenient):
    role: Literal["system"]
    content: InterleavedContent


class ToolResponseMessage(Lenient):
    role: Literal["tool", "ipython"]
    call_id: Annotated[str, Field(max_length=256)] = ""
    tool_name: str | dict[str, Any] | None = None
    content: InterleavedContent


class CompletionMessage(Lenient):
    role: Literal["assistant"]
    content: InterleavedContent = ""
    stop_reason: str | None = None
    tool_calls: bounded_list(ToolCall, 64) | None = None


Message = Annotated[Union[UserMessage, SystemMessage, ToolResponseMessage, CompletionMessage],
                    Field(discriminator="role")]
Messages = bounded_list(Message, MAX_LIST, 1)


class GreedyStrategy(Lenient):
    type: Literal["greedy"] = "greedy"


class TopPStrategy(Lenient):
    type: Literal["top_p"]
    temperature: Annotated[Number, Field(ge=0, le=10)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None


class TopKStrategy(Lenient):
    type: Literal["top_k"]
    top_k: Annotated[Int, Field(ge=1)]


Strategy = Annotated[Union[GreedyStrategy, TopPStrategy, TopKStrategy], Field(discriminator="type")]


class SamplingParams(Lenient):
    strategy: Strategy | None = None
    # 0 means the server's default, as in Llama Stack.
    max_tokens: Annotated[Int, Field(ge=0, le=1_000_000)] | None = None
    repetition_penalty: Number | None = None
    stop: bounded_list(Annotated[str, Field(max_length=256)], 16) | None = None


class ToolParamDefinition(Lenient):
    param_type: Annotated[str, Field(max_length=64)] = "string"
    description: str | None = None
    required: bool = True
    default: Any = None


class ToolDefinition(Lenient):
    tool_name: str | dict[str, Any]
    description: str | None = None
    parameters: dict[str, ToolParamDefinition] | None = None


class ToolConfig(Lenient):
    tool_choice: Annotated[str, Field(max_length=256)] | None = None
    tool_prompt_format: str | None = None
    system_message_behavior: str | None = None


class ChatCompletionRequest(RequestBody):
    model_id: ResourceId
    messages: Messages
    sampling_params: SamplingParams | None = None
    tools: bounded_list(ToolDefinition, 128) | None = None
    tool_choice: Annotated[str, Field(max_length=256)] | None = None
    tool_prompt_format: str | None = None
    response_format: LlamaResponseFormat | None = None
    stream: bool | None = False
    logprobs: dict[str, Any] | None = None
    tool_config: ToolConfig | None = None


class CompletionRequest(RequestBody):
    model_id: ResourceId
    content: InterleavedContent
    sampling_params: SamplingParams | None = None
    response_format: LlamaResponseFormat | None = None
    stream: bool | None = False
    logprobs: dict[str, Any] | None = None


class EmbeddingsRequest(RequestBody):
    model_id: ResourceId
    contents: bounded_list(InterleavedContent, 2048, 1)
    text_truncation: str | None = "none"
    output_dimension: Int | None = None
    task_type: str | None = None


class EmbeddingsResponse(BaseModel):
    embeddings: list[list[float]]


# -- agents ----------------------------------------------------------------------------------


class ToolGroupWithArgs(Lenient):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    args: dict[str, Any] = Field(default_factory=dict)


ToolGroupRef = Union[Annotated[str, Field(min_length=1, max_length=256)], ToolGroupWithArgs]


class RAGToolArgs(Lenient):
    """args of the builtin::rag toolgroup; `retrieval` is ours (docs/agents: retrieve_first or model_decides)."""

    vector_db_ids: bounded_list(ResourceId, 64) = Field(default_factory=list)
    query_config: RAGQueryConfig | None = None
    retrieval: Literal["retrieve_first", "model_decides"] | None = None


class ClientToolDef(Lenient):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    description: str | None = None
    parameters: bounded_list(dict[str, Any], 64) = Field(default_factory=list)
    metadata: dict[str, Any] | None = None


class AgentConfig(Lenient):
    model: ResourceId
    instructions: Annotated[str, Field(max_length=MAX_QUERY_CHARS * 4)] = ""
    sampling_params: SamplingParams | None = None
    input_shields: list[str] | None = None
    output_shields: list[str] | None = None
    toolgroups: bounded_list(ToolGroupRef, 64) | None = None
    client_tools: bounded_list(ClientToolDef, 64) | None = None
    tool_choice: str | None = None
    tool_prompt_format: str | None = None
    tool_config: ToolConfig | None = None
    max_infer_iters: Annotated[Int, Field(ge=1, le=100)] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    enable_session_persistence: bool | None = None
    response_format: LlamaResponseFormat | None = None


class CreateAgentRequest(RequestBody):
    agent_config: AgentConfig


class AgentCreated(BaseModel):
    agent_id: str


class CreateSessionRequest(RequestBody):
    session_name: Annotated[str, Field(max_length=256)]


class SessionCreated(BaseModel):
    session_id: str


class TurnDocument(Lenient):
    content: DocumentContent
    mime_type: Annotated[str, Field(max_length=255)] | None = None
    # Not in Llama Stack's turn Document, but its clients' shared Document type carries them.
    document_id: DocumentId | None = None
    metadata: dict[str, Any] | None = None


TurnMessage = Annotated[Union[UserMessage, ToolResponseMessage], Field(discriminator="role")]


class CreateTurnRequest(RequestBody):
    messages: bounded_list(TurnMessage, MAX_LIST, 1)
    stream: bool | None = False
    documents: bounded_list(TurnDocument, 64) | None = None
    toolgroups: bounded_list(ToolGroupRef, 64) | None = None
    tool_config: ToolConfig | None = None


class ToolResponse(Lenient):
    call_id: Annotated[str, Field(max_length=256)]
    tool_name: str | dict[str, Any]
    content: InterleavedContent
    metadata: dict[str, Any] | None = None


class ResumeTurnRequest(RequestBody):
    tool_responses: bounded_list(ToolResponse, 64) = Field(default_factory=list)
    stream: bool | None = False


class PaginatedList(BaseModel):
    data: list[dict[str, Any]]
    has_more: bool = False
    url: str | None = None

