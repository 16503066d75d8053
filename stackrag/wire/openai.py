"""Request shapes of the OpenAI-compatible API (files, vector stores, chat, embeddings). Responses
are OpenAI's JSON objects, built by the services; llama-stack extras are accepted alongside."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class VectorStoreCreate(Lenient):
    name: str | None = None
    file_ids: list[str] = Field(default_factory=list)
    chunking_strategy: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    expires_after: dict[str, Any] | None = None
    embedding_model: str | None = None
    embedding_dimension: int | None = None
    provider_id: str | None = None


class VectorStoreUpdate(Lenient):
    name: str | None = None
    metadata: dict[str, Any] | None = None
    expires_after: dict[str, Any] | None = None


class VectorStoreFileCreate(Lenient):
    file_id: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class VectorStoreFileUpdate(Lenient):
    attributes: dict[str, Any]


class FileBatchCreate(Lenient):
    file_ids: list[str]
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class VectorStoreSearch(Lenient):
    query: str | list[str]
    filters: dict[str, Any] | None = None
    max_num_results: int | None = None
    ranking_options: dict[str, Any] | None = None
    rewrite_query: bool | None = False
    search_mode: str | None = None


class ChatCompletionCreate(Lenient):
    model: str
    messages: list[dict[str, Any]]
    stream: bool | None = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    stream_options: dict[str, Any] | None = None


class CompletionCreate(Lenient):
    model: str
    prompt: str | list[str]
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool | None = False


class EmbeddingCreate(Lenient):
    model: str
    input: str | list[str]
    encoding_format: str | None = "float"
    dimensions: int | None = None


class ConversationCreate(Lenient):
    items: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None


class ConversationUpdate(Lenient):
    metadata: dict[str, Any]


class ConversationItemsCreate(Lenient):
    items: list[dict[str, Any]]
