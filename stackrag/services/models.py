"""Models: those declared in the run config plus those registered over the API (persisted), each
served by an inference provider that says it serves its kind ("embedding" or "llm")."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from ..config import ModelEntry
from ..content.chunking import embed_whole
from ..errors import BadRequest, StackError
from ..providers.protocols import ChatModel, Embedder, ModelProvider
from ..storage.registry import Registry, require
from .records import ModelRecord

log = logging.getLogger(__name__)
NAMESPACE = "models"
MODEL_TYPES = ("llm", "embedding")


class ModelService:
    def __init__(self, registry: Registry, inference_providers: dict[str, ModelProvider]):
        self._registry = registry
        self._providers = inference_providers

    def declare(self, entries: list[ModelEntry]) -> None:
        """Register the run config's models; an entry for a provider we do not run is skipped, loudly."""
        for entry in entries:
            provider_id = entry.provider_id or self._default_provider(entry.model_type)
            if provider_id not in self._providers:
                log.warning("model %s skipped: inference provider %r is not running", entry.model_id, provider_id)
                continue
            record = ModelRecord(
                identifier=entry.model_id,
                provider_id=provider_id,
                provider_resource_id=entry.provider_model_id or entry.model_id,
                model_type=entry.model_type,
                metadata=entry.metadata,
                from_config=True,
            )
            self._check(record)
            self._registry.put(NAMESPACE, record.identifier, record.model_dump())

    def _default_provider(self, model_type: str) -> str:
        for provider_id, provider in self._providers.items():
            if model_type in provider.serves:
                return provider_id
        raise BadRequest(f"no inference provider here can serve {model_type} models")

    def _check(self, record: ModelRecord) -> None:
        if record.model_type not in MODEL_TYPES:
            raise BadRequest(f"model_type must be one of {', '.join(MODEL_TYPES)}, not {record.model_type!r}")
        if record.model_type == "embedding":
            dim = record.metadata.get("embedding_dimension")
            if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
                raise BadRequest(
                    f"embedding model {record.identifier!r} needs metadata.embedding_dimension (a positive integer)"
                )

    def register(
        self,
        model_id: str,
        provider_model_id: str | None,
        provider_id: str | None,
        metadata: dict[str, Any] | None,
        model_type: str | None,
    ) -> ModelRecord:
        model_type = model_type or "llm"
        if provider_id is None:
            provider_id = self._default_provider(model_type)
        elif provider_id not in self._providers:
            known = ", ".join(sorted(self._providers)) or "none"
            raise BadRequest(f"provider_id {provider_id!r} is not an inference provider here (known: {known})")
        record = ModelRecord(
            identifier=model_id,
            provider_id=provider_id,
            provider_resource_id=provider_model_id or model_id,
            model_type=model_type,
            metadata=metadata or {},
        )
        self._check(record)
        self._provider_for(record)
        if model_type == "embedding":
            self.embedder_for(record)  # fails now, not at the first insert, if the provider cannot serve it
        self._registry.put(NAMESPACE, record.identifier, record.model_dump())
        return record

    def list(self) -> list[ModelRecord]:
        return [ModelRecord.model_validate(v) for v in self._registry.list(NAMESPACE)]

    def get(self, model_id: str) -> ModelRecord:
        return ModelRecord.model_validate(require(
            self._registry, NAMESPACE, model_id, f"Model {model_id!r} not found; GET /v1/models lists the registered models"))

    def unregister(self, model_id: str) -> None:
        self.get(model_id)
        self._registry.delete(NAMESPACE, model_id)

    def _provider_for(self, record: ModelRecord) -> ModelProvider:
        provider = self._providers.get(record.provider_id)
        if provider is None or record.model_type not in provider.serves:
            served = "serves no such models" if provider is not None else "is not running"
            raise BadRequest(f"model {record.identifier!r} ({record.model_type}): provider {record.provider_id!r} "
                             f"{served}")
        return provider

    def embedder_for(self, record: ModelRecord) -> Embedder:
        if record.model_type != "embedding":
            raise BadRequest(f"model {record.identifier!r} is not an embedding model (model_type {record.model_type})")
        return self._provider_for(record).embedder(record.provider_resource_id)

    def embedder(self, model_id: str) -> Embedder:
        return self.embedder_for(self.get(model_id))

    def chat_model(self, model_id: str) -> ChatModel:
        record = self.get(model_id)
        if record.model_type != "llm":
            raise BadRequest(f"model {model_id!r} is an {record.model_type} model, not a chat model (llm)")
        return self._provider_for(record).chat_model(record.provider_resource_id)

    async def embed(self, model_id: str, texts: list[str]) -> np.ndarray:
        """One vector per text, however long: the mean of its embedding windows, re-normalised."""
        return await asyncio.to_thread(embed_whole, self.embedder(model_id), texts)

    def provider_key(self, model_id: str, provider_data: dict[str, Any]) -> str | None:
        """The caller's own key for the provider of this model, from X-LlamaStack-Provider-Data."""
        return self._provider_for(self.get(model_id)).key_from_provider_data(provider_data)

    def start(self) -> None:
        """At server start-up: load the embedding models now (the first insert or query need not wait)
        and begin loading local chat models in the background."""
        for record in self.list():
            try:
                self._provider_for(record).start(record.provider_resource_id)
            except StackError as exc:
                log.warning("%s model %s is not usable: %s", record.model_type, record.identifier, exc.message)
