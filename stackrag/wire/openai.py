"""Request and response shapes of the OpenAI-compatible API (files, vector stores, chat, embeddings,
responses' inputs); llama-stack extras are accepted alongside. Nested shapes are typed: chunking
strategies, attribute filters (recursive), ranking options, attributes, messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, field_validator, model_validator

from .common import (bounded_list, MAX_QUERIES, MAX_QUERY_CHARS, Int, IntOrDigits, Lenient, Number, RequestBody,
                     ResourceId)
from .llama_stack import Ranker, RRFRanker, WeightedRanker
from .response_format import ChatResponseFormat, ResponseText

# OpenAI's limits on attributes and metadata: 16 keys, keys <= 64 characters, strings <= 512.
AttributeValue = Union[Annotated[str, Field(max_length=512)], bool, Int, Number]


def _attribute_keys(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if len(value) > 16:
        raise ValueError("may hold at most 16 keys")
    for key in value:
        if not 1 <= len(key) <= 64:
            raise ValueError(f"key {key[:20]!r} must be 1 to 64 characters")
    return value


Attributes = Annotated[dict[str, AttributeValue], Field()]


class StaticChunking(Lenient):
    max_chunk_size_tokens: Annotated[Int, Field(ge=100, le=4096)]
    chunk_overlap_tokens: Annotated[Int, Field(ge=0)] = 0


class StaticChunkingStrategy(Lenient):
    type: Literal["static"]
    static: StaticChunking

    @field_validator("static")
    @classmethod
    def _overlap(cls, static: StaticChunking) -> StaticChunking:
        if static.chunk_overlap_tokens > static.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens must be at most half of max_chunk_size_tokens")
        return static


class AutoChunkingStrategy(Lenient):
    type: Literal["auto"]


# Llama Stack's default prompt for contextual chunking (its placeholders, in this order).
DEFAULT_CONTEXT_PROMPT = (
    "<document>\n{{WHOLE_DOCUMENT}}\n</document>\n"
    "Here is the chunk we want to situate within the whole document\n"
    "<chunk>\n{{CHUNK_CONTENT}}\n</chunk>\n"
    "Please give a short succinct description to situate this chunk of text within the overall document "
    "for the purposes of improving search retrieval of the chunk. "
    "Answer only with the succinct description and nothing else."
)


class ContextualChunking(Lenient):
    model_id: ResourceId | None = None  # required: checked when a file is attached, with a message that says so
    context_prompt: Annotated[str, Field(max_length=8000)] = DEFAULT_CONTEXT_PROMPT
    max_chunk_size_tokens: Annotated[Int, Field(ge=100, le=4096)] = 700
    # (Llama Stack's default is 400, more than the half of 700 that chunking here allows.)
    chunk_overlap_tokens: Annotated[Int, Field(ge=0)] = 200
    timeout_seconds: Annotated[Int, Field(ge=1, le=3600)] | None = None
    max_concurrency: Annotated[Int, Field(ge=1, le=16)] | None = None

    @model_validator(mode="after")
    def _check(self) -> "ContextualChunking":
        if self.chunk_overlap_tokens > self.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens must be at most half of max_chunk_size_tokens")
        prompt = self.context_prompt
        if "{{WHOLE_DOCUMENT}}" not in prompt or "{{CHUNK_CONTENT}}" not in prompt:
            raise ValueError("context_prompt must contain {{WHOLE_DOCUMENT}} and {{CHUNK_CONTENT}}")
        if prompt.index("{{WHOLE_DOCUMENT}}") > prompt.index("{{CHUNK_CONTENT}}"):
            raise ValueError("context_prompt must have {{WHOLE_DOCUMENT}} before {{CHUNK_CONTENT}}")
        return self


class ContextualChunkingStrategy(Lenient):
    type: Literal["contextual"]
    contextual: ContextualChunking


ChunkingStrategy = Annotated[Union[AutoChunkingStrategy, StaticChunkingStrategy, ContextualChunkingStrategy],
                             Field(discriminator="type")]


class ComparisonFilter(Lenient):
    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    key: Annotated[str, Field(min_length=1, max_length=64)]
    value: AttributeValue | bounded_list(AttributeValue, 1000)


class CompoundFilter(Lenient):
    type: Literal["and", "or"]
    filters: bounded_list(Union[ComparisonFilter, CompoundFilter], 64, 1)


Filter = Union[ComparisonFilter, CompoundFilter]
CompoundFilter.model_rebuild()


NEURAL_REFUSED = ("a neural reranker needs a reranker model, and this server has none (no reranker weights "
                  "install offline); use ranker 'rrf' or 'weighted', or weights over vector and keyword only")


class RankingOptions(Lenient):
    # OpenAI names a ranker ("auto", "default-2024-11-15", "none"); Llama Stack 0.7 also takes an
    # object, and 0.8 names "rrf" | "weighted" | "neural" with alpha, impact_factor or weights.
    ranker: Annotated[str, Field(max_length=64)] | Ranker | None = None
    score_threshold: Annotated[Number, Field(ge=-1, le=1)] | None = None
    alpha: Annotated[Number, Field(ge=0, le=1)] | None = None
    impact_factor: Annotated[Number, Field(gt=0, le=100_000)] | None = None
    weights: dict[Literal["vector", "keyword", "neural"], Annotated[Number, Field(ge=0, le=1)]] | None = None
    model: Annotated[str, Field(max_length=256)] | None = None

    @model_validator(mode="after")
    def _supported(self) -> "RankingOptions":
        if self.ranker == "neural" or self.model is not None or (self.weights or {}).get("neural"):
            raise ValueError(NEURAL_REFUSED)
        if self.weights is not None and abs(sum(self.weights.values()) - 1.0) > 0.001:
            raise ValueError("ranking_options.weights must sum to 1.0")
        return self

    def algorithm(self) -> RRFRanker | WeightedRanker | None:
        """The fusion asked for, whichever way it was spelled; None: the server's default."""
        if isinstance(self.ranker, (RRFRanker, WeightedRanker)):
            return self.ranker
        if self.weights:
            dense, keyword = self.weights.get("vector", 0.0), self.weights.get("keyword", 0.0)
            return WeightedRanker(type="weighted", alpha=dense / (dense + keyword) if dense + keyword else 0.5)
        if self.ranker == "weighted" or (self.ranker is None and self.alpha is not None):
            return WeightedRanker(type="weighted", alpha=0.5 if self.alpha is None else self.alpha)
        if self.ranker == "rrf" or (self.ranker is None and self.impact_factor is not None):
            return RRFRanker(impact_factor=60.0 if self.impact_factor is None else self.impact_factor)
        return None


class StoreExpiry(Lenient):
    """OpenAI's vector-store expires_after: so many days after the store was last active."""

    anchor: Literal["last_active_at"]
    days: Annotated[Int, Field(ge=1, le=365)]


class VectorStoreCreate(RequestBody):
    name: Annotated[str, Field(max_length=256)] | None = None
    file_ids: bounded_list(ResourceId, 500) = Field(default_factory=list)
    chunking_strategy: ChunkingStrategy | None = None
    metadata: Attributes | None = None
    expires_after: StoreExpiry | None = None
    embedding_model: ResourceId | None = None
    embedding_dimension: IntOrDigits | None = None
    provider_id: ResourceId | None = None

    _keys = field_validator("metadata")(_attribute_keys)


class VectorStoreUpdate(RequestBody):
    name: Annotated[str, Field(max_length=256)] | None = None
    metadata: Attributes | None = None
    expires_after: StoreExpiry | None = None

    _keys = field_validator("metadata")(_attribute_keys)


class VectorStoreFileCreate(RequestBody):
    file_id: ResourceId
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None

    _keys = field_validator("attributes")(_attribute_keys)


class VectorStoreFileUpdate(RequestBody):
    attributes: Attributes

    _keys = field_validator("attributes")(_attribute_keys)


class FileBatchCreate(RequestBody):
    file_ids: bounded_list(ResourceId, 500, 1)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None

    _keys = field_validator("attributes")(_attribute_keys)


Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]


class VectorStoreSearch(RequestBody):
    query: Query | bounded_list(Query, MAX_QUERIES, 1)
    filters: Filter | None = None
    max_num_results: Annotated[Int, Field(ge=1, le=50)] | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: bool | None = False
    search_mode: Literal["vector", "keyword", "hybrid"] | None = None


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | bounded_list(dict[str, Any], 1000) | None = None
    tool_calls: bounded_list(dict[str, Any], 64) | None = None
    tool_call_id: Annotated[str, Field(max_length=256)] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None


class ChatCompletionCreate(RequestBody):
    model: ResourceId
    messages: bounded_list(ChatMessage, 10_000, 1)
    stream: bool | None = False
    tools: bounded_list(dict[str, Any], 128) | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[Int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[Int, Field(ge=1)] | None = None
    stop: Annotated[str, Field(max_length=256)] | bounded_list(str, 16) | None = None
    stream_options: dict[str, Any] | None = None
    response_format: ChatResponseFormat | None = None


class CompletionCreate(RequestBody):
    model: ResourceId
    prompt: str | bounded_list(str, 64, 1)
    max_tokens: Annotated[Int, Field(ge=1)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    stream: bool | None = False


class EmbeddingCreate(RequestBody):
    model: ResourceId
    input: str | bounded_list(str, 2048, 1)
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: Int | None = None


class ConversationCreate(RequestBody):
    items: bounded_list(dict[str, Any], 1000) | None = None
    metadata: Attributes | None = None


class ConversationUpdate(RequestBody):
    metadata: Attributes


class ConversationItemsCreate(RequestBody):
    items: bounded_list(dict[str, Any], 1000)


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True



# -- responses -----------------------------------------------------------------------------------


class InputMessage(Lenient):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Annotated[str, Field(max_length=1_000_000)] | bounded_list(dict[str, Any], 1000)
    id: Annotated[str, Field(max_length=256)] | None = None


class OtherInputItem(Lenient):
    """An earlier tool call or result: carried along by clients, nothing the local loop needs."""

    type: Annotated[str, Field(max_length=64)]

    @field_validator("type")
    @classmethod
    def _not_message(cls, value: str) -> str:
        if value == "message":
            raise ValueError("a message item needs a role of user, assistant, system or developer")
        return value


class FileSearchTool(Lenient):
    type: Literal["file_search"]
    vector_store_ids: bounded_list(ResourceId, 16, 1)
    filters: Filter | None = None
    max_num_results: Annotated[Int, Field(ge=1, le=50)] | None = None
    ranking_options: RankingOptions | None = None


class ConversationRef(Lenient):
    id: ResourceId


class ResponseCreate(RequestBody):
    model: ResourceId
    input: Annotated[str, Field(min_length=1, max_length=1_000_000)] | Annotated[
        list[Union[InputMessage, OtherInputItem]], Field(min_length=1, max_length=1000)]
    instructions: Annotated[str, Field(max_length=100_000)] | None = None
    tools: bounded_list(FileSearchTool, 8) | None = None
    include: bounded_list(Annotated[str, Field(max_length=128)], 16) | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    max_output_tokens: Annotated[Int, Field(ge=1)] | None = None
    previous_response_id: ResourceId | None = None
    conversation: ResourceId | ConversationRef | None = None
    store: bool | None = True
    metadata: Attributes | None = None
    stream: bool | None = False
    text: ResponseText | None = None

    _keys = field_validator("metadata")(_attribute_keys)
