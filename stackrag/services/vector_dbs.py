"""Vector DBs: registered by id (the caller's id is kept, as Llama Stack <= 0.2.20 did), persisted,
and backed by one collection in one vector_io provider; `open` gives the VectorDB handle (record,
index, embedder) every other service works through.

Each registration is a generation of its own with a collection of its own: deleting a vector DB and
registering the same id again never hands the new one the old one's collection, so a write that
started before the delete can only fail, never land in the new store. No two registrations share a
collection.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from ..errors import BadRequest, Conflict, NotFound, StackError, Unavailable
from ..providers.protocols import Embedder, VectorIndex
from ..storage.registry import Registry
from . import tenancy
from .keys import KeyService
from .models import ModelService
from .records import VectorDBRecord

log = logging.getLogger(__name__)
NAMESPACE = "vector_dbs"
# Unregisters in progress: the record of a vector DB whose collection is being dropped.
DROPS = "vector_db_drops"


@dataclass(frozen=True)
class VectorDB:
    """A registered vector DB, opened: what stores it and what embeds for it."""

    record: VectorDBRecord
    index: VectorIndex
    embedder: Embedder

    @property
    def id(self) -> str:
        return self.record.identifier

    @property
    def collection(self) -> str:
        return self.record.collection


class VectorDBService:
    def __init__(self, registry: Registry, models: ModelService, indexes: dict[str, VectorIndex],
                 keys: KeyService | None = None):
        self._registry = registry
        self._models = models
        self.indexes = indexes
        self._keys = keys

    async def register(
        self,
        vector_db_id: str,
        embedding_model: str,
        embedding_dimension: int | None,
        provider_id: str | None,
        provider_vector_db_id: str | None,
        vector_db_name: str | None = None,
    ) -> VectorDBRecord:
        if provider_id is None:
            if not self.indexes:
                raise BadRequest("no vector_io provider is configured")
            provider_id = next(iter(self.indexes))
        index = self.indexes.get(provider_id)
        if index is None:
            known = ", ".join(self.indexes) or "none"
            raise BadRequest(f"provider_id {provider_id!r} is not a vector_io provider here (known: {known})")
        model = self._models.get(embedding_model)
        if model.model_type != "embedding":
            raise BadRequest(f"embedding_model {embedding_model!r} is not an embedding model")
        dimension = model.embedding_dimension
        if dimension is None:
            raise BadRequest(f"embedding model {embedding_model!r} has no metadata.embedding_dimension")
        if embedding_dimension is not None and embedding_dimension != dimension:
            # The reference silently uses the model's dimension; saying so is kinder than a later mismatch.
            log.warning(
                "vector DB %s: embedding_dimension %s ignored; model %s has %s",
                vector_db_id, embedding_dimension, embedding_model, dimension,
            )
        existing = self._registry.get(NAMESPACE, vector_db_id)
        if existing is not None and not tenancy.sees_vector_db(vector_db_id):
            # Another key's: say the id is taken, and nothing about what it holds.
            raise Conflict(f"vector_db_id {vector_db_id!r} is taken; choose another")
        if existing is not None:
            record = VectorDBRecord.model_validate(existing)
            if record.embedding_model != embedding_model or record.provider_id != provider_id:
                raise BadRequest(
                    f"vector DB {vector_db_id!r} already exists with embedding_model {record.embedding_model!r} "
                    f"on provider {record.provider_id!r}; unregister it first to change them"
                )
            return record
        resource_id = provider_vector_db_id or vector_db_id
        generation = uuid.uuid4().hex[:12]
        record = VectorDBRecord(
            identifier=vector_db_id,
            provider_id=provider_id,
            provider_resource_id=resource_id,
            embedding_model=embedding_model,
            embedding_dimension=dimension,
            collection=index.name_for(f"{resource_id}\x00{generation}"),
            generation=generation,
            vector_db_name=vector_db_name,
            created_at=int(time.time()),
        )
        owner = next((r for r in self._all() if (r.provider_id, r.collection) == (provider_id, record.collection)), None)
        if owner is not None:  # cannot happen by the name's construction; refuse rather than share
            raise BadRequest(f"collection {record.collection} already belongs to vector DB {owner.identifier!r}")
        # The record goes first: a process killed in between leaves a record whose collection start-up
        # creates, never a collection no record owns (which no one could reach or remove).
        self._registry.put(NAMESPACE, vector_db_id, record.model_dump())
        try:
            await asyncio.to_thread(index.create, record.collection, dimension)
        except BaseException:
            self._registry.delete(NAMESPACE, vector_db_id)
            raise
        tenant = tenancy.current()
        if tenant is not None and self._keys is not None:
            await asyncio.to_thread(self._keys.grant, tenant.key_id, vector_db_id)
            tenancy.extend(vector_db_id)
        return record

    def _all(self) -> list[VectorDBRecord]:
        return [VectorDBRecord.model_validate(v) for v in self._registry.list(NAMESPACE)]

    def list(self) -> list[VectorDBRecord]:
        """The vector DBs the caller may see (a scoped key: its own)."""
        return [r for r in self._all() if tenancy.sees_vector_db(r.identifier)]

    def get(self, vector_db_id: str) -> VectorDBRecord:
        stored = self._registry.get(NAMESPACE, vector_db_id) if tenancy.sees_vector_db(vector_db_id) else None
        if stored is None:
            raise NotFound(f"Vector DB {vector_db_id!r} not found; register it with POST /v1/vector-dbs")
        return VectorDBRecord.model_validate(stored)

    def open(self, vector_db_id: str) -> VectorDB:
        """The vector DB with the index that stores it and the embedder that reads it."""
        record = self.get(vector_db_id)
        return VectorDB(record, self.index_of(record), self._models.embedder(record.embedding_model))

    def check_current(self, db: VectorDB) -> None:
        """Before a write commits: the vector DB it was opened as still exists, as the same generation."""
        stored = self._registry.get(NAMESPACE, db.id)
        if stored is None or stored.get("collection") != db.collection:
            raise Conflict(f"vector DB {db.id!r} was deleted (or deleted and registered again) while this write "
                           "ran; nothing was written")

    def save(self, record: VectorDBRecord) -> None:
        self._registry.put(NAMESPACE, record.identifier, record.model_dump())

    def index_of(self, record: VectorDBRecord) -> VectorIndex:
        index = self.indexes.get(record.provider_id)
        if index is None:
            raise Unavailable(
                f"vector DB {record.identifier!r} lives on provider {record.provider_id!r}, which is not configured"
            )
        return index

    async def unregister(self, vector_db_id: str) -> None:
        record = self.get(vector_db_id)
        index = self.index_of(record)
        # Journalled like register: a kill before the drop leaves the journal entry, and the next start-up
        # finishes the drop. If Milvus refuses it, the vector DB stays as it was.
        self._registry.put(DROPS, vector_db_id, record.model_dump())
        self._registry.delete(NAMESPACE, vector_db_id)
        try:
            await asyncio.to_thread(index.drop, record.collection)
        except BaseException:
            self._registry.put(NAMESPACE, vector_db_id, record.model_dump())
            self._registry.delete(DROPS, vector_db_id)
            raise
        self._registry.delete(DROPS, vector_db_id)

    def chunk_counts(self, records: list[VectorDBRecord]) -> dict[str, int | None]:
        """Chunks per vector DB, None where the store cannot say; a provider that is down is asked
        once, not once per vector DB (each try waits for a connect timeout)."""
        counts: dict[str, int | None] = {}
        down: set[str] = set()
        for record in records:
            counts[record.identifier] = None
            if record.provider_id in down:
                continue
            try:
                counts[record.identifier] = self.index_of(record).count_rows(record.collection)
            except Unavailable:
                down.add(record.provider_id)
            except StackError as exc:
                log.warning("vector DB %s: cannot count its chunks: %s", record.identifier, exc.message)
        return counts

    def load_all(self) -> None:
        """Make Milvus match the registry at start-up (a killed register or unregister leaves one step
        undone), then load every collection, so the first query is not the slow one."""
        records = self._all()
        self._finish_drops(records)
        for record in records:
            index = self.indexes.get(record.provider_id)
            if index is None:
                log.warning("vector DB %s: provider %s is not configured", record.identifier, record.provider_id)
                continue
            try:
                if not index.exists(record.collection):
                    log.warning("vector DB %s: collection %s is missing; re-creating it empty",
                                record.identifier, record.collection)
                    index.create(record.collection, record.embedding_dimension)
                index.load(record.collection)
            except Unavailable as exc:
                log.warning("vector DB %s not loaded yet: %s", record.identifier, exc.message)

    def _finish_drops(self, records: list[VectorDBRecord]) -> None:
        owned = {(r.provider_id, r.collection) for r in records}
        for entry in self._registry.list(DROPS):
            record = VectorDBRecord.model_validate(entry)
            index = self.indexes.get(record.provider_id)
            try:
                # Registered again since with the same collection (records made before generations).
                if index is not None and (record.provider_id, record.collection) not in owned:
                    log.warning("vector DB %s: finishing its unregister (dropping %s)",
                                record.identifier, record.collection)
                    index.drop(record.collection)
                self._registry.delete(DROPS, record.identifier)
            except Unavailable as exc:
                log.warning("vector DB %s: unregister not finished yet: %s", record.identifier, exc.message)

