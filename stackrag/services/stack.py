"""The composition root: build providers from the run config, then every service once, on top of them.

`Stack` only holds what was built; `start` and `close` bring it up and down with the server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import BadRequest
from ..providers.protocols import Provider
from ..providers.registry import PROVIDERS, create, lookup
from ..storage import Storage, files_kind, open_storage
from ..storage.registry import Registry
from .agents import AgentService
from .citations import Attribution
from .files import FileService
from .ingestion import Ingestion
from .keys import KeyService, config_keys
from .models import ModelService
from .queries import QueryWriter
from .rag import RAGService
from .replica import Replica
from .responses import ResponseService
from .retrieval import Retrieval
from .vector_dbs import VectorDBService
from .vector_io import VectorIOService
from .vector_stores import VectorStoreService

log = logging.getLogger(__name__)

SERVED_APIS = ("inference", "vector_io", "tool_runtime")


@dataclass
class ProviderInfo:
    api: str
    provider_id: str
    provider_type: str
    config: dict[str, Any]
    instance: Provider | None = None
    note: str = ""


@dataclass
class Stack:
    config: RunConfig
    registry: Registry
    storage: Storage
    replica: Replica
    models: ModelService
    vector_dbs: VectorDBService
    ingestion: Ingestion
    retrieval: Retrieval
    rag: RAGService
    vector_io: VectorIOService
    files: FileService
    vector_stores: VectorStoreService
    agents: AgentService
    responses: ResponseService
    keys: KeyService
    providers: list[ProviderInfo] = field(default_factory=list)


def build_stack(config: RunConfig) -> Stack:
    data_dir = config.resolved_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    providers, instances = _providers(config, data_dir)
    storage = open_storage(config)
    # The files API is served by the storage layer, not by a configured provider; it is listed so
    # that clients (and Llama Stack's tests) that look for a files provider find one.
    kind = files_kind(config)
    providers.append(ProviderInfo("files", "files", "inline::localfs" if kind == "directory" else "inline::postgres",
                                  {"type": kind}))
    registry = storage.registry
    replica = Replica(registry, storage.jobs, config.jobs)
    models = ModelService(registry, instances["inference"])
    models.declare(config.models)
    keys = KeyService(registry, config_keys(config.server.active_keys()))
    vector_dbs = VectorDBService(registry, models, instances["vector_io"], keys)
    ingestion = Ingestion(config.fetch, config.ingestion, registry, replica.replica_id, vector_dbs.check_current)
    retrieval = Retrieval(config.retrieval)
    queries = QueryWriter(models, config.retrieval.rewrite_query)
    queries.check_configured()
    rag = RAGService(vector_dbs, ingestion, retrieval, queries)
    attribution = Attribution(models)
    files = FileService(registry, storage.blobs, config.ingestion.max_document_bytes)
    vector_stores = VectorStoreService(vector_dbs, files, ingestion, retrieval, registry, replica, models, queries,
                                       config.ingestion.attach_wait_seconds)
    # Writes of replicas that died are rolled back by the live ones, not only at a restart.
    replica.sweep(lambda: ingestion.recover(vector_dbs.indexes, replica.alive))
    return Stack(
        config=config,
        registry=registry,
        storage=storage,
        replica=replica,
        models=models,
        vector_dbs=vector_dbs,
        ingestion=ingestion,
        retrieval=retrieval,
        rag=rag,
        vector_io=VectorIOService(vector_dbs, ingestion, retrieval),
        files=files,
        vector_stores=vector_stores,
        agents=AgentService(registry, models, rag, attribution),
        responses=ResponseService(registry, models, vector_stores, attribution),
        keys=keys,
        providers=providers,
    )


def start(stack: Stack) -> None:
    """At server start: load the models, make Milvus match the registry, finish what a killed
    process left (unfinished writes, files still to ingest)."""
    stack.models.start()
    stack.vector_dbs.load_all()
    stack.ingestion.recover(stack.vector_dbs.indexes, stack.replica.alive)
    stack.vector_stores.requeue_unfinished()


def close(stack: Stack) -> None:
    for info in stack.providers:
        if info.instance is not None:
            info.instance.close()
    stack.storage.close()


def _providers(config: RunConfig, data_dir: Path) -> tuple[list[ProviderInfo], dict[str, dict[str, Provider]]]:
    providers: list[ProviderInfo] = []
    instances: dict[str, dict[str, Provider]] = {api: {} for api in SERVED_APIS}
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
            if spec.target is None:
                continue  # served by the services themselves (the RAG runtime)
            info.instance = create(spec, entry.provider_id, entry.config, data_dir)
            instances[api][entry.provider_id] = info.instance
    return providers, instances


def _unsupported(api: str, provider_type: str) -> str:
    ours = sorted(p for p, s in PROVIDERS.items() if s.api == api)
    if api not in SERVED_APIS:
        return f"the {api} API is not served by stackrag; this provider is ignored"
    return f"provider type not supported (supported for {api}: {', '.join(ours)}); ignored"


