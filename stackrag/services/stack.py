"""The composition root: build providers from the run config and the services on top of them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import BadRequest, StackError
from ..providers.protocols import Embedder, VectorIndex
from ..providers.registry import PROVIDERS, load_class, lookup
from ..storage import Storage, open_storage
from ..storage.registry import Registry
from .agents import AgentService
from ..content.chunking import embed_whole
from .ingestion import Ingestion
from .models import ModelService
from .records import VectorDBRecord
from .replica import Replica
from .retrieval import RAGQueryConfig, RAGResult, Retrieval
from .files import FileService
from .vector_dbs import VectorDBService
from .responses import ResponseService
from .vector_stores import VectorStoreService

log = logging.getLogger(__name__)

SERVED_APIS = ("inference", "vector_io", "tool_runtime")


@dataclass
class ProviderInfo:
    api: str
    provider_id: str
    provider_type: str
    config: dict[str, Any]
    instance: Any = None
    note: str = ""


@dataclass
class Stack:
    config: RunConfig
    registry: Registry
    models: ModelService
    vector_dbs: VectorDBService
    ingestion: Ingestion
    retrieval: Retrieval
    files: FileService
    storage: Storage
    replica: Replica
    agents: AgentService = field(init=False)
    vector_stores: VectorStoreService = field(init=False)
    responses: ResponseService = field(init=False)
    providers: list[ProviderInfo] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.agents = AgentService(self.registry, self.models, self.knowledge_search, self.retrieval.rag_config)
        self.vector_stores = VectorStoreService(self.vector_dbs, self.files, self.ingestion, self.retrieval,
                                                self.registry, self.models, self.replica)
        # Writes of replicas that died are rolled back by the live ones, not only at a restart.
        self.replica.sweep(lambda: self.ingestion.recover(self.vector_dbs.indexes, self.replica.alive))
        self.responses = ResponseService(self.registry, self.models, self.vector_stores)

    def target(self, vector_db_id: str) -> tuple[VectorDBRecord, VectorIndex, Embedder]:
        """A vector DB with the index that stores it and the embedder that reads it."""
        record = self.vector_dbs.get(vector_db_id)
        return record, self.vector_dbs.index_of(record), self.models.embedder(record.embedding_model)

    async def knowledge_search(self, vector_db_ids: list[str], query: Any, config: RAGQueryConfig) -> RAGResult:
        targets = [self.target(vector_db_id) for vector_db_id in vector_db_ids]
        return await self.retrieval.knowledge_search(targets, query, config)

    async def embed_whole(self, embedder: Embedder, texts: list[str]) -> np.ndarray:
        """One vector per text, however long: the mean of its embedding windows, re-normalised."""
        return await asyncio.to_thread(embed_whole, embedder, texts)

    def startup(self) -> None:
        # Load embedding models now, so the first insert or query does not pay for it.
        for model in self.models.list():
            if model.model_type == "embedding":
                try:
                    self.models.embedder_for(model)
                except StackError as exc:
                    log.warning("embedding model %s is not usable: %s", model.identifier, exc.message)
        self.models.start_chat_models()
        self.vector_dbs.load_all()
        self.ingestion.recover(self.vector_dbs.indexes, self.replica.alive)
        self.vector_stores.requeue_unfinished()

    def close(self) -> None:
        for info in self.providers:
            close = getattr(info.instance, "close", None)
            if close is not None:
                close()
        self.storage.close()


def build_stack(config: RunConfig) -> Stack:
    data_dir = config.resolved_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    providers: list[ProviderInfo] = []
    instances: dict[str, dict[str, Any]] = {api: {} for api in SERVED_APIS}
    for api, entries in config.providers.items():
        for entry in entries:
            info = ProviderInfo(api, entry.provider_id, entry.provider_type, dict(entry.config))
            providers.append(info)
            spec = lookup(api, entry.provider_type)
            if spec is None:
                info.note = _unsupported(api, entry.provider_type)
                log.warning("provider %s (%s): %s", entry.provider_id, entry.provider_type, info.note)
                continue
            if entry.provider_id in instances[api]:
                raise BadRequest(f"providers.{api}: provider_id {entry.provider_id!r} appears twice")
            info.instance = _instantiate(spec, entry.provider_id, entry.provider_type, entry.config, data_dir)
            instances[api][entry.provider_id] = info.instance

    storage = open_storage(config)
    registry = storage.registry
    replica = Replica(registry, storage.jobs, config.jobs)
    models = ModelService(registry, instances["inference"])
    models.declare(config.models)
    vector_dbs = VectorDBService(registry, models, instances["vector_io"])
    return Stack(
        config=config,
        registry=registry,
        models=models,
        vector_dbs=vector_dbs,
        ingestion=Ingestion(config.fetch, config.ingestion, registry, replica.replica_id),
        retrieval=Retrieval(config.retrieval),
        files=FileService(registry, storage.blobs, config.ingestion.max_document_bytes),
        storage=storage,
        replica=replica,
        providers=providers,
    )


def _instantiate(spec: Any, provider_id: str, provider_type: str, config: dict[str, Any], data_dir: Any) -> Any:
    if not spec.target:
        return object()  # served by the core itself (the RAG runtime)
    return load_class(spec)(provider_id, provider_type, config, data_dir)


def _unsupported(api: str, provider_type: str) -> str:
    ours = sorted(p for p, s in PROVIDERS.items() if s.api == api)
    if api not in SERVED_APIS:
        return f"the {api} API is not served by stackrag; this provider is ignored"
    return f"provider type not supported (supported for {api}: {', '.join(ours)}); ignored"
