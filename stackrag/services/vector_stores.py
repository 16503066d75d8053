"""OpenAI-style vector stores over the same vector DBs the classic API registers: one record, one
collection, no copy. A vector store's files are ingested in the background, as jobs any replica
may run (services/replica.py); their status says what really happened (in_progress, completed, or
failed with last_error), from whichever replica is asked."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..config import DEFAULT_EMBEDDING_MODEL
from ..content.documents import extract
from ..content.text import content_as_text
from ..errors import BadRequest, Conflict, NotFound, StackError
from ..storage.jobs import Job
from ..wire.openai import (ChunkingStrategy, ComparisonFilter, ContextualChunkingStrategy, Filter, RankingOptions,
                           StaticChunkingStrategy)
from .contextual import Contextualizer, check_model
from .queries import QueryWriter
from .files import FileService
from .ingestion import Document, Fence, Ingestion
from .models import ModelService
from .records import VectorDBRecord
from .replica import Lease, Replica
from .retrieval import Retrieval, SearchParams, ranker_dict
from .vector_dbs import VectorDBService

log = logging.getLogger(__name__)
EXPIRY_SWEEP_SECONDS = 60.0


@dataclass
class SearchResult:
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any]
    content: list[dict[str, Any]]
    # The best-matching window of the chunk: what a model is shown (responses' file_search).
    passage: str = ""

    def wire(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "filename": self.filename, "score": self.score,
                "attributes": self.attributes, "content": self.content}


@dataclass
class SearchPage:
    queries: list[str]
    results: list[SearchResult] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        return {"object": "vector_store.search_results.page", "search_query": self.queries,
                "data": [r.wire() for r in self.results], "has_more": False, "next_page": None}


FILES = "vector_store_files"
BATCHES = "vector_store_file_batches"
# "auto" chunking: the ingestion default of the classic API, a quarter overlap.
AUTO_CHUNK = {"type": "static", "static": {"max_chunk_size_tokens": 512, "chunk_overlap_tokens": 128}}
INGEST_FILE = "ingest_file"
# A file whose ingestion was started this many times without finishing (each time its replica
# died) is marked failed instead of taking the next replica down too.
MAX_ATTEMPTS = 3


def chunking_of(strategy: ChunkingStrategy | None) -> dict[str, Any]:
    """The strategy as stored with the file (and shown): auto is the static default."""
    if isinstance(strategy, StaticChunkingStrategy):
        return {"type": "static", "static": strategy.static.model_dump()}
    if isinstance(strategy, ContextualChunkingStrategy):
        return {"type": "contextual", "contextual": strategy.contextual.model_dump()}
    return AUTO_CHUNK


def matches(attributes: dict[str, Any], flt: Filter) -> bool:
    """OpenAI attribute filters: {type: eq|ne|gt|gte|lt|lte|in|nin, key, value} or {type: and|or, filters}."""
    if not isinstance(flt, ComparisonFilter):
        results = [matches(attributes, f) for f in flt.filters]
        return all(results) if flt.type == "and" else any(results)
    kind, key, value = flt.type, flt.key, flt.value
    if kind in ("in", "nin") and not isinstance(value, list):
        raise BadRequest(f"the '{kind}' filter needs a list value")
    if key not in attributes:
        return kind in ("ne", "nin")
    actual = attributes[key]
    try:
        return {
            "eq": lambda: actual == value, "ne": lambda: actual != value,
            "gt": lambda: actual > value, "gte": lambda: actual >= value,
            "lt": lambda: actual < value, "lte": lambda: actual <= value,
            "in": lambda: actual in value, "nin": lambda: actual not in value,
        }[kind]()
    except TypeError:
        return False  # comparing unlike types (a string with a number) matches nothing


class VectorStoreService:
    def __init__(self, vector_dbs: VectorDBService, files: FileService, ingestion: Ingestion,
                 retrieval: Retrieval, registry: Any, replica: Replica, models: ModelService, queries: QueryWriter,
                 attach_wait_seconds: float = 0.0):
        self._dbs = vector_dbs
        self._models = models
        self._queries = queries
        self._attach_wait = attach_wait_seconds
        self._files = files
        self._ingestion = ingestion
        self._retrieval = retrieval
        self._registry = registry
        self._replica = replica
        replica.handle(INGEST_FILE, self._ingest_job)

    # -- stores -------------------------------------------------------------------------------

    async def create(self, name: str | None, file_ids: list[str], chunking: ChunkingStrategy | None,
                     metadata: dict[str, Any] | None, embedding_model: str | None, provider_id: str | None,
                     expires_after_days: int | None = None) -> dict:
        store_id = f"vs_{uuid.uuid4()}"
        record = await self._dbs.register(store_id, embedding_model or DEFAULT_EMBEDDING_MODEL, None, provider_id,
                                          None, vector_db_name=name)
        record.metadata = dict(metadata or {})
        record.last_active_at = record.created_at
        record.expires_after_days = expires_after_days
        self._dbs.save(record)
        await self._settle([self._attach(store_id, file_id, {}, chunking, missing_fails=True)
                            for file_id in file_ids])
        return self.view(record)

    def view(self, record: VectorDBRecord) -> dict[str, Any]:
        files = self._store_files(record.identifier)
        counts = {s: 0 for s in ("completed", "cancelled", "failed", "in_progress")}
        for f in files:
            counts[f["status"]] = counts.get(f["status"], 0) + 1
        return {
            "id": record.identifier, "object": "vector_store", "created_at": record.created_at,
            "name": record.vector_db_name or record.identifier, "usage_bytes": sum(f["usage_bytes"] for f in files),
            "file_counts": {**counts, "total": len(files)},
            "status": "expired" if _expired(record) else "in_progress" if counts["in_progress"] else "completed",
            "expires_after": ({"anchor": "last_active_at", "days": record.expires_after_days}
                              if record.expires_after_days else None),
            "expires_at": _expires_at(record), "last_active_at": record.last_active_at or record.created_at,
            "metadata": record.metadata,
            # llama-stack extras
            "embedding_model": record.embedding_model, "embedding_dimension": record.embedding_dimension,
            "provider_id": record.provider_id,
        }

    def list(self) -> list[dict[str, Any]]:
        return [self.view(r) for r in self._dbs.list()]

    def get(self, store_id: str) -> dict[str, Any]:
        return self.view(self._record(store_id))

    def _record(self, store_id: str) -> VectorDBRecord:
        try:
            return self._dbs.get(store_id)
        except NotFound:
            raise NotFound(f"Vector store {store_id!r} not found") from None

    def update(self, store_id: str, name: str | None, metadata: dict[str, Any] | None,
               expires_after_days: int | None = None) -> dict[str, Any]:
        record = self._record(store_id)
        if name is not None:
            record.vector_db_name = name
        if metadata is not None:
            record.metadata = dict(metadata)
        if expires_after_days is not None:
            record.expires_after_days = expires_after_days
        record.last_active_at = int(time.time())
        self._dbs.save(record)
        return self.view(record)

    def _check_active(self, record: VectorDBRecord) -> None:
        """An expired store is kept (its files and their rows) but not used, as OpenAI does: it can
        be read and deleted, not searched or added to."""
        if _expired(record):
            raise BadRequest(f"vector store {record.identifier!r} expired at {_expires_at(record)} "
                             f"({record.expires_after_days} days after it was last active); create a new one")

    async def delete(self, store_id: str) -> None:
        self._record(store_id)
        await self._dbs.unregister(store_id)
        for f in self._store_files(store_id):
            self._replica.cancel(f"{store_id}/{f['id']}")
            self._registry.delete(FILES, f"{store_id}/{f['id']}")

    # -- files of a store ---------------------------------------------------------------------

    def _store_files(self, store_id: str) -> list[dict[str, Any]]:
        return [f for f in self._registry.list(FILES) if f["vector_store_id"] == store_id]

    async def attach(self, store_id: str, file_id: str, attributes: dict[str, Any] | None,
                     chunking: ChunkingStrategy | None) -> dict[str, Any]:
        key = self._attach(store_id, file_id, attributes, chunking)
        await self._settle([key])
        return self._registry.get(FILES, key) or {}

    async def _settle(self, keys: list[str]) -> None:
        """Wait, at most attach_wait_seconds, until these files are no longer in_progress: Llama Stack
        answers an attach of a small file with its final status, and its clients rely on that. The
        job may run on another replica, so the registry is what is watched."""
        deadline = time.monotonic() + self._attach_wait
        pending = list(keys)
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            pending = [k for k in pending if (self._registry.get(FILES, k) or {}).get("status") == "in_progress"]

    def _attach(self, store_id: str, file_id: str, attributes: dict[str, Any] | None,
                chunking: ChunkingStrategy | None, missing_fails: bool = False) -> str:
        """Record the attachment and queue its ingestion; its registry key. An unknown file is a
        404, or with missing_fails (a store or batch of several files, as Llama Stack does it) an
        entry that failed and says why, so that the other files still get ingested."""
        self._check_active(self._record(store_id))
        if isinstance(chunking, ContextualChunkingStrategy):
            check_model(self._models, chunking.contextual)
        try:
            file = self._files.get(file_id)
        except NotFound as exc:
            if not missing_fails:
                raise
            file, error = None, {"code": "invalid_file", "message": exc.message}
        entry = {
            "id": file_id, "object": "vector_store.file", "vector_store_id": store_id,
            "attributes": {**(attributes or {})}, "chunking_strategy": chunking_of(chunking),
            "created_at": int(time.time()), "last_error": None if file else error,
            "status": "in_progress" if file else "failed", "usage_bytes": 0,
            "filename": file["filename"] if file else file_id, "attachment": uuid.uuid4().hex,
        }
        key = f"{store_id}/{file_id}"
        self._registry.put(FILES, key, entry)
        if file:
            self._replica.submit(INGEST_FILE, key, {})
        return key

    def requeue_unfinished(self) -> None:
        """Files still in_progress with no job (attached before there were jobs, or the job was lost):
        queued again; a file whose job exists keeps it."""
        for entry in self._registry.list(FILES):
            if entry["status"] == "in_progress":
                self._replica.submit(INGEST_FILE, f"{entry['vector_store_id']}/{entry['id']}", {}, replace=False)

    async def _ingest_job(self, job: Job, lease: Lease) -> None:
        """Ingest one attached file. Run again after a replica died mid-way, it replaces what that
        run wrote (a document inserted again replaces its chunks), so nothing is doubled."""
        entry = self._registry.get(FILES, job.key)
        if entry is None:
            return  # detached before it was ingested
        if job.attempts > MAX_ATTEMPTS:
            update = {"status": "failed", "last_error": {
                "code": "server_error", "message": f"ingestion was interrupted {job.attempts - 1} times"}}
        else:
            update = await self._ingest(job.key, entry)
        current = self._registry.get(FILES, job.key)
        if current is None or current.get("attachment") != entry.get("attachment"):
            return  # detached, deleted or attached anew meanwhile: the fence kept this run's rows out
        if await lease.held():  # else another replica took the job over and writes the status
            self._registry.put(FILES, job.key, {**current, **update})

    def _still_attached(self, key: str, attachment: str | None) -> Fence:
        """The fence of one file's write: it commits only while this attachment stands."""
        def fence() -> None:
            current = self._registry.get(FILES, key)
            if current is None or current.get("attachment") != attachment:
                raise Conflict(f"file {key.split('/', 1)[1]} was detached or deleted while it was ingested; "
                               "nothing was written")
        return fence

    async def _ingest(self, key: str, entry: dict[str, Any]) -> dict[str, Any]:
        try:
            db = self._dbs.open(entry["vector_store_id"])
            file = self._files.get(entry["id"])
            data = self._files.content(entry["id"])
            text = await extract(data, _mime_for(file), None, file.get("content_type"), file["filename"],
                                 self._ingestion.parse_timeout)
            strategy = entry["chunking_strategy"]
            sizes = strategy[strategy["type"]]
            contextualize = Contextualizer(self._models, sizes) if strategy["type"] == "contextual" else None
            document = Document(entry["id"], {"type": "text", "text": text},
                                metadata={**entry["attributes"], "filename": file["filename"]})
            await self._ingestion.insert_documents(db, [document], sizes["max_chunk_size_tokens"],
                                                   sizes["chunk_overlap_tokens"],
                                                   fence=self._still_attached(key, entry.get("attachment")),
                                                   contextualize=contextualize)
            update = {"status": "completed", "usage_bytes": len(data), "last_error": None}
        except StackError as exc:
            update = {"status": "failed", "last_error": {"code": "invalid_file", "message": exc.message}}
        except Exception as exc:  # the status must tell, whatever went wrong
            log.exception("ingesting %s failed", key)
            update = {"status": "failed", "last_error": {"code": "server_error", "message": type(exc).__name__}}
        return update

    def list_files(self, store_id: str, status: str | None = None) -> list[dict[str, Any]]:
        self._record(store_id)
        return [f for f in self._store_files(store_id) if status is None or f["status"] == status]

    def get_file(self, store_id: str, file_id: str) -> dict[str, Any]:
        self._record(store_id)
        entry = self._registry.get(FILES, f"{store_id}/{file_id}")
        if entry is None:
            raise NotFound(f"File {file_id!r} is not in vector store {store_id!r}")
        return entry

    def update_file(self, store_id: str, file_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
        entry = self.get_file(store_id, file_id)
        entry["attributes"] = dict(attributes)
        self._registry.put(FILES, f"{store_id}/{file_id}", entry)
        return entry

    async def file_content(self, store_id: str, file_id: str, include_embeddings: bool = False,
                           include_metadata: bool = False) -> list[dict[str, Any]]:
        """The file's chunks as content parts; Llama Stack's fields beside OpenAI's type/text, null
        unless asked for (the embedding is that of the chunk's first embedding window)."""
        entry = self.get_file(store_id, file_id)
        db = self._dbs.open(store_id)
        chunks = await asyncio.to_thread(db.index.document_chunks, db.collection, entry["id"],
                                         include_embeddings or include_metadata)
        return [{"type": "text", "text": content_as_text(c.get("content"), "content"),
                 "embedding": c.get("embedding") if include_embeddings else None,
                 "metadata": c.get("metadata") if include_metadata else None,
                 "chunk_metadata": {"chunk_id": c.get("chunk_id"), "document_id": entry["id"]}
                 if include_metadata else None} for c in chunks]

    async def detach(self, store_id: str, file_id: str) -> None:
        self.get_file(store_id, file_id)
        await self._remove(store_id, file_id)

    async def _remove(self, store_id: str, file_id: str) -> None:
        """Detach: the entry goes first (a write under way fails its fence from then on), then its
        job, then the rows already written."""
        key = f"{store_id}/{file_id}"
        self._registry.delete(FILES, key)
        self._replica.cancel(key)
        try:
            db = self._dbs.open(store_id)
        except NotFound:
            return  # the whole store is gone
        await asyncio.to_thread(db.index.delete_documents, db.collection, [file_id])

    async def delete_file(self, file_id: str) -> None:
        """DELETE /v1/files/{id}: the file leaves every store it is attached to (its ingestion stops,
        its rows go), then its content."""
        self._files.get(file_id)
        await self._purge_file(file_id)

    async def _purge_file(self, file_id: str) -> None:
        for entry in [f for f in self._registry.list(FILES) if f["id"] == file_id]:
            await self._remove(entry["vector_store_id"], file_id)
        self._files.remove(file_id)

    async def expire_files(self) -> int:
        """Delete the files past their expires_at, from every store too (run by the server every
        EXPIRY_SWEEP_SECONDS by expiry_loop, on every replica: a file deleted twice is deleted once)."""
        expired = await asyncio.to_thread(self._files.expired)
        for file_id in expired:
            try:
                await self._purge_file(file_id)
            except NotFound:
                pass
        return len(expired)

    async def expiry_loop(self, period: float = EXPIRY_SWEEP_SECONDS) -> None:
        while True:
            try:
                if await self.expire_files():
                    log.info("expired files deleted")
            except Exception as exc:  # the store is away: next time
                log.warning("could not delete expired files: %s", exc)
            await asyncio.sleep(period)

    # -- file batches -------------------------------------------------------------------------

    async def create_batch(self, store_id: str, file_ids: list[str], attributes: dict[str, Any] | None,
                           chunking: ChunkingStrategy | None) -> dict[str, Any]:
        keys = [self._attach(store_id, file_id, attributes, chunking, missing_fails=True) for file_id in file_ids]
        batch = {"id": f"vsfb_{uuid.uuid4().hex}", "vector_store_id": store_id, "file_ids": file_ids,
                 "created_at": int(time.time())}
        self._registry.put(BATCHES, batch["id"], batch)
        await self._settle(keys)
        return self._batch_view(batch)

    def _batch(self, store_id: str, batch_id: str) -> dict[str, Any]:
        self._record(store_id)  # the store first: a batch of a store the caller cannot see does not exist
        batch = self._registry.get(BATCHES, batch_id)
        if batch is None or batch["vector_store_id"] != store_id:
            raise NotFound(f"File batch {batch_id!r} not found in vector store {store_id!r}")
        return batch

    def _batch_view(self, batch: dict[str, Any]) -> dict[str, Any]:
        statuses = [self.get_file(batch["vector_store_id"], f)["status"] for f in batch["file_ids"]]
        counts = {s: statuses.count(s) for s in ("completed", "cancelled", "failed", "in_progress")}
        status = "cancelled" if batch.get("cancelled") else ("in_progress" if counts["in_progress"] else "completed")
        return {"id": batch["id"], "object": "vector_store.file_batch", "vector_store_id": batch["vector_store_id"],
                "created_at": batch["created_at"], "status": status, "file_counts": {**counts, "total": len(statuses)}}

    def get_batch(self, store_id: str, batch_id: str) -> dict[str, Any]:
        return self._batch_view(self._batch(store_id, batch_id))

    def batch_files(self, store_id: str, batch_id: str) -> list[dict[str, Any]]:
        return [self.get_file(store_id, f) for f in self._batch(store_id, batch_id)["file_ids"]]

    def cancel_batch(self, store_id: str, batch_id: str) -> dict[str, Any]:
        """Marks the batch cancelled; files already being ingested still finish."""
        batch = self._batch(store_id, batch_id)
        batch["cancelled"] = True
        self._registry.put(BATCHES, batch_id, batch)
        return self._batch_view(batch)

    # -- search -------------------------------------------------------------------------------

    async def search(self, store_id: str, query: str | list[str], filters: Filter | None,
                     max_num_results: int | None, ranking_options: RankingOptions | None,
                     search_mode: str | None, rewrite_query: bool = False) -> SearchPage:
        self._check_active(self._record(store_id))
        db = self._dbs.open(store_id)
        queries = query if isinstance(query, list) else [query]
        if rewrite_query:
            # The page reports the queries searched, as the reference does after its rewrite.
            queries = [await self._queries.rewritten(" ".join(queries))]
        options = ranking_options or RankingOptions()
        ranker = options.algorithm()
        defaults = self._retrieval.settings
        params = SearchParams(10 if max_num_results is None else max_num_results, options.score_threshold or 0.0,
                              search_mode or defaults.mode, ranker_dict(ranker, defaults.ranker))
        entries = {f["id"]: f for f in self._store_files(store_id)}
        allowed = None
        if filters is not None:
            allowed = [fid for fid, f in entries.items() if matches(f["attributes"], filters)]
        hits = await self._retrieval.search(db, " ".join(queries), params, allowed)
        results = []
        for hit in hits:
            entry = entries.get(hit.document_id)
            metadata = hit.chunk.get("metadata") or {}
            results.append(SearchResult(
                file_id=hit.document_id,
                filename=(entry or {}).get("filename") or metadata.get("filename") or hit.document_id,
                score=hit.score,
                attributes=(entry or {}).get("attributes", {k: v for k, v in metadata.items()
                                                              if k not in ("token_count", "metadata_token_count")}),
                content=[{"type": "text", "text": content_as_text(hit.chunk.get("content"), "content")}],
                passage=hit.window_text,
            ))
        self._dbs.save(db.record.model_copy(update={"last_active_at": int(time.time())}))
        return SearchPage(queries, results)


def _mime_for(file: dict[str, Any]) -> str | None:
    name = file.get("filename", "").lower()
    for suffix, mime in ((".pdf", "application/pdf"), (".html", "text/html"), (".htm", "text/html"),
                         (".md", "text/markdown"), (".rst", "text/x-rst"), (".txt", "text/plain")):
        if name.endswith(suffix):
            return mime
    return file.get("content_type")


def _expires_at(record: VectorDBRecord) -> int | None:
    if not record.expires_after_days:
        return None
    return (record.last_active_at or record.created_at) + record.expires_after_days * 86_400


def _expired(record: VectorDBRecord) -> bool:
    expires_at = _expires_at(record)
    return expires_at is not None and time.time() >= expires_at
