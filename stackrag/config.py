"""The run config: one pydantic model shaped like a Llama Stack run.yaml.

A file is optional; `RunConfig()` alone is the embedded default (Milvus Lite and MiniLM under
the data dir). Keys we do not use (telemetry, safety, image_name, ...) are accepted and ignored so
that a Llama Stack run.yaml loads as written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .errors import describe_validation_errors

DEFAULT_PORT = 8321
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_CHAT_MODEL = "qwen2.5-coder-0.5b-instruct"

# ${env.NAME}, ${env.NAME:=default} (default when unset or empty) and ${env.NAME:+value}
# (value only when set), the forms Llama Stack run.yaml files use.
_ENV_REF = re.compile(r"\$\{env\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:=|:\+|:)(?P<arg>[^}]*))?\}")


class ConfigError(ValueError):
    pass


def default_data_dir() -> Path:
    return Path(os.environ.get("STACKRAG_DATA_DIR") or "~/.stackrag").expanduser()


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class Provider(BaseModel):
    model_config = ConfigDict(extra="allow")

    provider_id: str
    provider_type: str
    config: dict[str, Any] = Field(default_factory=dict)


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_id: str
    provider_id: str | None = None
    provider_model_id: str | None = None
    model_type: str = "llm"
    metadata: dict[str, Any] = Field(default_factory=dict)


class MetadataStore(BaseModel):
    """Where everything but the vectors lives (models, vector DBs, agents, files, jobs): `sqlite`
    beside the Milvus store by default, or `postgres` (Llama Stack's keys), which several replicas
    share. Other Llama Stack keys (table_name, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    type: str = "sqlite"
    db_path: str | None = None
    host: str = "localhost"
    port: int = 5432
    db: str = "stackrag"
    user: str = "stackrag"
    password: SecretStr | None = None


class FileStorage(BaseModel):
    """Where uploaded file contents live. None: in PostgreSQL when the metadata store is postgres,
    else the `files` folder of the data dir. A `directory` on shared storage also serves replicas."""

    type: Literal["directory", "postgres"] | None = None
    path: str | None = None


class JobSettings(BaseModel):
    """Background work (vector-store file ingestion), claimed from the metadata store by one replica."""

    # Jobs one process runs at once; embedding is the bottleneck, so more mostly queue on the CPU.
    concurrency: int = Field(default=2, ge=1)
    # A replica renews its jobs every third of this; a job not renewed for this long (its replica
    # died) is taken over by another replica, and its unfinished writes are rolled back.
    lease_seconds: float = Field(default=30.0, ge=1.0)


class ApiKey(BaseModel):
    """A key clients send as `Authorization: Bearer <key>`. read_only keys may query and chat, not
    insert, register or delete. A key that comes out empty (`${env.NAME:=}` unset) is ignored."""

    key: SecretStr | None = None
    access: Literal["read_write", "read_only"] = "read_write"


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="allow")

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # No keys: authentication is off (a loud warning), which is refused on a non-loopback address
    # unless allow_unauthenticated says so. STACKRAG_API_KEY / STACKRAG_READ_ONLY_API_KEY add keys.
    api_keys: list[ApiKey] = Field(default_factory=list)
    allow_unauthenticated: bool = False

    def active_keys(self) -> list[ApiKey]:
        return [k for k in self.api_keys if k.key is not None and k.key.get_secret_value()]


class FetchSettings(BaseModel):
    """Bounds on fetching document URLs for users (see content/fetch.py)."""

    timeout_seconds: float = 30.0
    max_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 5
    # Private, loopback and link-local targets are refused unless this is on.
    allow_private_urls: bool = False


class IngestionSettings(BaseModel):
    max_document_bytes: int = 50 * 1024 * 1024
    max_documents_per_request: int = 1000
    max_chunks_per_request: int = 100_000
    # An HTML or PDF document's parse is stopped after this long (content/parsing.py).
    parse_timeout_seconds: float = Field(default=30.0, gt=0)
    # vector_stores.files.create and file_batches.create answer when ingestion has ended, or after
    # this long with status in_progress (Llama Stack answers small files completed; its clients
    # and tests rely on it). 0: answer at once.
    attach_wait_seconds: float = Field(default=30.0, ge=0, le=600)
    # How documents become chunks and what gets embedded; the defaults won the comparison in
    # docs/retrieval.md. "tokens": overlapping token windows. "structure": Markdown/reST chunks
    # follow sections and keep code blocks whole (other text still gets token windows).
    # "sections": each document tiled once with embedding windows that follow its structure
    # (Markdown, reST, and HTML and PDF, which are extracted as Markdown), chunks made of whole
    # windows: every token embedded once (content/chunking.py:tile_document).
    chunking: Literal["tokens", "structure", "sections"] = "tokens"
    # Embed each window as "title > section" + text (the stored text is unchanged).
    embed_titles: bool = False
    # Index that line for keyword (BM25) search too.
    index_titles: bool = False
    # Tokens per embedding window; None = as many as the embedding model reads.
    window_tokens: int | None = Field(default=None, ge=32)


class QueryRewriteSettings(BaseModel):
    """vector-store search's rewrite_query: the chat model that rewrites the query, and how (Llama
    Stack's vector_stores.rewrite_query_params). No model: rewrite_query is refused with a 400."""

    model: str | None = None
    prompt: str = ("Expand this query with relevant synonyms and related terms. Return only the improved query, "
                   "no explanations:\n\n{query}\n\nImproved query:")
    max_tokens: int = Field(default=100, ge=1, le=1000)
    temperature: float = Field(default=0.3, ge=0.0, le=2.0)

    @field_validator("prompt")
    @classmethod
    def _has_query(cls, value: str) -> str:
        if "{query}" not in value:
            raise ValueError("retrieval.rewrite_query.prompt must contain {query}")
        return value


class RetrievalSettings(BaseModel):
    """Search defaults for requests that do not choose (docs/retrieval.md has the measurements)."""

    mode: Literal["vector", "keyword", "hybrid"] = "hybrid"
    # Fusion of dense and keyword results in hybrid mode.
    ranker: dict[str, Any] = Field(default_factory=lambda: {"type": "rrf", "impact_factor": 60.0})
    # What hybrid mode fuses: "rows" (the store's hybrid search: embedding windows, then the best
    # window per chunk) or "chunks" (each leg ranks chunks by their best window, then fused here).
    fusion: Literal["rows", "chunks"] = "rows"
    # Chunks each leg of a "chunks" fusion ranks.
    candidates: int = Field(default=50, ge=1, le=1000)
    # knowledge_search (rag-tool query, agents) answers "no relevant context" when the best chunk's
    # cosine similarity to the question is below this; None turns the check off.
    relevance_threshold: float | None = Field(default=0.3, ge=-1.0, le=1.0)
    # ... and also when the top chunks hold less than this share of the question's term weight
    # (idf) while their cosine stays below `trusted_similarity`: the question hinges on words the
    # documents never use (idf from the collection; on a Milvus server, from a sample of it);
    # None turns it off. Both chosen over every dev set: no answerable question declined
    # (docs/retrieval.md, "Knowing when nothing matches").
    term_coverage: float | None = Field(default=0.15, ge=0.0, le=1.0)
    trusted_similarity: float = Field(default=0.6, ge=-1.0, le=1.0)
    # ... and also when the question holds a term that no row of the collection holds, and that
    # the embedding model's vocabulary splits into at least `unknown_term_pieces` word pieces
    # (1: any term; 2: not a common word), below `trusted_similarity`.
    unknown_terms: bool = False
    unknown_term_pieces: int = Field(default=2, ge=1, le=10)
    # A question this similar to "what do these documents cover?" gets each document's opening
    # passage instead of a search; None turns the overview off.
    overview_similarity: float | None = Field(default=0.45, ge=-1.0, le=1.0)
    rewrite_query: QueryRewriteSettings = Field(default_factory=QueryRewriteSettings)


def _default_providers() -> dict[str, list[Provider]]:
    return {
        "inference": [
            Provider(provider_id="llama-cpp", provider_type="inline::llama-cpp"),
            Provider(provider_id="sentence-transformers", provider_type="inline::sentence-transformers"),
        ],
        "vector_io": [
            Provider(provider_id="milvus", provider_type="inline::milvus", config={"db_path": "milvus.db"}),
        ],
        "tool_runtime": [Provider(provider_id="rag-runtime", provider_type="inline::rag-runtime")],
    }


def _default_models() -> list[ModelEntry]:
    return [
        ModelEntry(model_id=DEFAULT_CHAT_MODEL, provider_id="llama-cpp", model_type="llm"),
        ModelEntry(
            model_id=DEFAULT_EMBEDDING_MODEL,
            provider_id="sentence-transformers",
            model_type="embedding",
            metadata={"embedding_dimension": 384},
        )
    ]


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: int | str = 2
    data_dir: str | None = None
    providers: dict[str, list[Provider]] = Field(default_factory=_default_providers)
    models: list[ModelEntry] = Field(default_factory=list)
    metadata_store: MetadataStore = Field(default_factory=MetadataStore)
    files: FileStorage = Field(default_factory=FileStorage)
    jobs: JobSettings = Field(default_factory=JobSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    ingestion: IngestionSettings = Field(default_factory=IngestionSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()

    def resolve_path(self, path: str) -> Path:
        """A relative path in the config is relative to the data dir; `~` is expanded."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.resolved_data_dir() / p

    def providers_of(self, api: str) -> list[Provider]:
        return list(self.providers.get(api) or [])

    def with_builtin_defaults(self) -> RunConfig:
        """Fill in what a partial file leaves out: the embedding provider and model, the RAG runtime."""
        cfg = self.model_copy(deep=True)
        defaults = _default_providers()
        for api in ("vector_io", "tool_runtime"):
            if not cfg.providers_of(api):
                cfg.providers[api] = defaults[api]
        # The offline inference providers are always there (they load nothing until used), so a
        # config that names only a hosted provider still embeds, and can chat without a key.
        inference = cfg.providers_of("inference")
        for default in defaults["inference"]:
            if not any(p.provider_type == default.provider_type for p in inference):
                taken = {p.provider_id for p in inference}
                if default.provider_id in taken:
                    default.provider_id = f"stackrag-{default.provider_id}"
                inference.append(default)
        cfg.providers["inference"] = inference
        by_type = {p.provider_type: p.provider_id for p in inference}
        for model in _default_models():
            if any(m.model_id == model.model_id for m in cfg.models):
                continue
            kind = "inline::sentence-transformers" if model.model_type == "embedding" else "inline::llama-cpp"
            model.provider_id = by_type[kind]
            cfg.models.append(model)
        return cfg


def substitute_env(value: Any, env: dict[str, str] | None = None) -> Any:
    """Replace ${env.NAME:=default} references in every string of a parsed YAML tree."""
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: substitute_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(m: re.Match[str]) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg") or ""
        current = env.get(name)
        if op == ":+":
            return arg if current else ""
        if current:
            return current
        if op in (":=", ":"):
            return arg
        raise ConfigError(f"environment variable {name} is not set and has no default (write ${{env.{name}:=value}})")

    whole = _ENV_REF.fullmatch(value)
    result = _ENV_REF.sub(replace, value)
    # A value that was only a reference and came out empty means "not set", as in Llama Stack.
    if whole and result == "":
        return None
    return result


MIN_KEY_LENGTH = 16


def apply_environment(config: RunConfig, env: dict[str, str] | None = None) -> RunConfig:
    """Settings the environment gives whatever the config file says (secrets stay out of files): a new
    config, so that applying it twice adds each key once."""
    env = os.environ if env is None else env
    config = config.model_copy(deep=True)
    if truthy(env.get("STACKRAG_ALLOW_PRIVATE_URLS")):
        config.fetch.allow_private_urls = True
    for name, access in (("STACKRAG_API_KEY", "read_write"), ("STACKRAG_READ_ONLY_API_KEY", "read_only")):
        if env.get(name):
            config.server.api_keys.append(ApiKey(key=SecretStr(env[name]), access=access))
    for key in config.server.active_keys():
        # Never echo the key: the message names the rule only.
        if len(key.key.get_secret_value()) < MIN_KEY_LENGTH:
            raise ConfigError(f"an API key ({key.access}) is shorter than {MIN_KEY_LENGTH} characters; "
                              "use a long random one, e.g. `openssl rand -hex 24`")
    return config


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> RunConfig:
    if path is None:
        return RunConfig().with_builtin_defaults()
    p = Path(path).expanduser()
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {p}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must be a YAML mapping")
    raw = substitute_env(raw, env)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"config file {p} is invalid: {describe_validation_errors(e.errors(), limit=5)}") from e
    return cfg.with_builtin_defaults()
