"""The small protocols every provider kind implements. Services depend on these, never on a backend.

A provider class is built by the registry (registry.py) as `Class(provider_id, provider_type, config,
data_dir)` and says what it serves in `serves`: "embedding" and/or "llm" (inference), "vectors"
(vector_io).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, ClassVar, Protocol, Sequence

import numpy as np


class Provider(Protocol):
    serves: ClassVar[frozenset[str]]
    provider_id: str

    def health(self) -> dict[str, str]: ...

    def close(self) -> None: ...


# What the registry calls: (provider_id, provider_type, config, data_dir) -> the provider.
ProviderFactory = Callable[[str, str, dict[str, Any], Path], Provider]


class Tokenizer(Protocol):
    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token of `text` (no special tokens)."""
        ...

    def count(self, text: str) -> int: ...


class Embedder(Protocol):
    """An embedding model kept loaded once; `embed` is blocking and runs on a worker thread."""

    model_id: str
    dimension: int
    # How many tokens one input may hold before the model silently ignores the rest.
    max_tokens: int
    tokenizer: Tokenizer

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        ...


@dataclass
class StoredRow:
    """One indexed unit: an embedding window of a chunk. Rows of one chunk share `chunk_id`."""

    row_id: str
    chunk_id: str
    document_id: str
    window: int
    text: str
    vector: np.ndarray
    chunk: dict[str, Any]
    chunk_index: int = -1


@dataclass
class Replace:
    """Which older rows a write supersedes: those whose `field` (document_id or chunk_id) is in `values`."""

    field: str
    values: list[str]


@dataclass
class Hit:
    chunk_id: str
    document_id: str
    chunk: dict[str, Any]
    score: float
    # The embedding window of the chunk that matched best: the focused part a model may be shown.
    window_text: str = ""
    # Cosine similarity of that window to the query, whatever the mode ranked by; None when the
    # search had no query vector (keyword mode).
    similarity: float | None = None


@dataclass
class SearchRequest:
    mode: str  # vector | keyword | hybrid
    limit: int
    vector: np.ndarray | None = None
    text: str = ""
    ranker: dict[str, Any] = field(default_factory=dict)
    document_ids: list[str] | None = None


@dataclass
class IndexCapabilities:
    keyword: bool
    hybrid: bool
    note: str = ""
    # The dense index type (of the collection, else of new collections): HNSW on a Milvus server, one
    # the embedded engine allows (AUTOINDEX) there.
    dense_index: str = ""
    # The largest chunk (content and metadata as JSON) one row holds; 0: no limit.
    max_chunk_bytes: int = 0


class VectorIndex(Provider, Protocol):
    """A vector DB's storage in one backend (one Milvus collection per vector DB)."""

    provider_type: str

    def create(self, name: str, dimension: int) -> None: ...

    def drop(self, name: str) -> None: ...

    def exists(self, name: str) -> bool: ...

    def load(self, name: str) -> None: ...

    def name_for(self, resource_id: str) -> str:
        """The backend's name for a vector DB's collection; any id maps to a valid one."""
        ...

    def write(self, name: str, rows: list[StoredRow], ingest_id: str, replace: Replace | None) -> None:
        """Insert `rows`, then remove the older rows `replace` selects: a re-insert replaces."""
        ...

    def delete_documents(self, name: str, document_ids: list[str]) -> None: ...

    def delete_ingest(self, name: str, ingest_id: str) -> int:
        """Remove the rows one write (ingest_id) inserted; how many there were."""
        ...

    def search(self, name: str, request: SearchRequest) -> list[Hit]:
        """Best row per chunk, best first; scores are higher-is-better."""
        ...

    def count_rows(self, name: str, chunks_only: bool = True) -> int: ...

    def document_chunks(self, name: str, document_id: str, with_vectors: bool = False) -> list[dict[str, Any]]:
        """A document's chunks in their order; with_vectors: each also with its chunk_id and the
        "embedding" of its first window."""
        ...

    def document_heads(self, name: str, limit: int) -> list[Hit]:
        """The opening window of up to `limit` documents: an overview of what the DB holds."""
        ...

    def capabilities(self, name: str | None = None) -> IndexCapabilities: ...

    def term_coverage(self, name: str, question: str, texts: list[str]) -> float | None:
        """The share of the question's term weight (idf) found in `texts`; None when the backend
        keeps no term statistics."""
        ...

    def health(self) -> dict[str, str]: ...

    def close(self) -> None: ...


class ModelProvider(Provider, Protocol):
    """An inference provider: embedding models, chat models, or both."""

    def verify(self, provider_model_id: str) -> str | None:
        """That the model could load, without loading it (`stackrag doctor`): a description, or None
        when it cannot be checked from here (a remote API); raises StackError."""
        ...

    def embedder(self, provider_model_id: str) -> Embedder: ...

    def chat_model(self, provider_model_id: str) -> ChatModel: ...

    def start(self, provider_model_id: str) -> None:
        """At server start-up: begin loading the model in the background (a no-op for remote ones)."""
        ...

    def key_from_provider_data(self, provider_data: dict[str, Any]) -> str | None:
        """The caller's own key for this provider in X-LlamaStack-Provider-Data, if any."""
        ...


@dataclass
class StructuredOutput:
    """The answer must be one JSON object: any (schema None), or one valid against `schema`."""

    schema: dict[str, Any] | None = None
    # OpenAI-compatible APIs require a name for a schema; Llama Stack's classic format has none.
    name: str = "response"
    description: str | None = None
    strict: bool | None = None


@dataclass
class ChatRequest:
    """A chat completion in OpenAI message format (role/content/tool_calls/tool_call_id)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float | None = None
    stop: list[str] | None = None
    structured: StructuredOutput | None = None
    # A per-request key (X-LlamaStack-Provider-Data) for remote providers.
    api_key: str | None = None


@dataclass
class ChatChunk:
    text: str = ""
    # Complete tool calls ({"id", "name", "arguments": str}) once the model has finished them.
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None


class ChatModel(Protocol):
    model_id: str
    context_window: int

    async def count_tokens(self, messages: list[dict[str, Any]]) -> int: ...

    async def count_text(self, text: str) -> int: ...

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...

    def complete(self, prompt: str, max_tokens: int | None, temperature: float,
                 structured: StructuredOutput | None = None) -> AsyncIterator[ChatChunk]: ...
