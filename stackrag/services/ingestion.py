"""Ingestion: documents -> text -> chunks -> embedding windows -> rows in the vector DB's collection.

Every document is written in one `write` call, so its chunks land together or not at all, and a
document_id that is inserted again replaces its old chunks. Embedding runs in batches on a worker
thread, never on the event loop.

One document, one version: writes of the same (vector DB, document_id) take turns (a lock per
document in this process, and the metadata store's lock across replicas), so concurrent re-inserts
leave exactly the version that committed last, whole. A write commits only while what it was
started for still stands (the vector DB's generation, a vector-store file still attached); else it
writes nothing and answers 409.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np

from ..config import FetchSettings, IngestionSettings
from ..content.chunking import TextChunk, TiledChunk, embedding_windows, split_document, tile_document
from ..content.documents import document_content, title_of
from ..content.markdown import clean_markdown
from ..content.sections import markup_of
from ..content.text import content_as_text
from ..errors import BadRequest, Conflict, PayloadTooLarge, StackError
from ..providers.protocols import Embedder, Replace, StoredRow, VectorIndex
from ..storage.registry import Registry
from .vector_dbs import VectorDB

log = logging.getLogger(__name__)

DEFAULT_CHUNK_TOKENS = 512
MIN_CHUNK_TOKENS = 16
MAX_CHUNK_TOKENS = 4096
# Documents fetched at once; fetching is I/O bound, embedding is the real bottleneck.
FETCH_CONCURRENCY = 8
# Windows embedded and written per step: large enough to batch well, small enough to keep memory flat.
WINDOWS_PER_STEP = 256
# The "title > section" line embedded before each window is cut to this many tokens.
MAX_PREFIX_TOKENS = 32

Progress = Callable[[int, int], Awaitable[None] | None]
# Raises Conflict when what a write was started for is gone (checked under the document lock).
Fence = Callable[[], None]
# (document text, its chunks' texts) -> a context line per chunk ("" for none).
Contextualize = Callable[[str, list[str]], Awaitable[list[str]]]


@dataclass
class Document:
    """A document to ingest: its content as the API carries it (text, items, a URL or data: URL)."""

    document_id: str
    content: Any
    mime_type: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class PreparedChunk:
    chunk_id: str
    document_id: str
    stored: dict[str, Any]  # the chunk as queries return it: content + metadata
    windows: list[str]
    embedding: np.ndarray | None = None
    index: int = -1
    # Embedded before each window (the document title and section); not part of the stored text.
    prefix: str = ""
    # Indexed for keyword search before each window (the same line), when so configured.
    keyword_prefix: str = ""

    def embedding_inputs(self) -> list[str]:
        return [self.prefix + w for w in self.windows]


@dataclass
class InsertStats:
    documents: int = 0
    chunks: int = 0
    windows: int = 0
    seconds: float = 0.0


# Ingests under way, in the registry: one left behind by a killed process names rows to remove.
INGESTS = "ingests"


class DocumentLocks:
    """One writer at a time per (collection, document_id) in this process; keys are taken in sorted
    order, so writers of overlapping document sets cannot deadlock."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}

    async def acquire(self, keys: list[str]) -> None:
        taken: list[str] = []
        try:
            for key in keys:
                self._waiting[key] = self._waiting.get(key, 0) + 1
                lock = self._locks.setdefault(key, asyncio.Lock())
                try:
                    await lock.acquire()
                except BaseException:
                    self._forget(key)
                    raise
                taken.append(key)
        except BaseException:
            self.release(taken)
            raise

    def release(self, keys: list[str]) -> None:
        for key in reversed(keys):
            self._locks[key].release()
            self._forget(key)

    def _forget(self, key: str) -> None:
        self._waiting[key] -= 1
        if not self._waiting[key]:
            del self._waiting[key], self._locks[key]


class Ingestion:
    def __init__(self, fetch: FetchSettings, limits: IngestionSettings, registry: Registry, owner: str = "",
                 current: Callable[[VectorDB], None] | None = None):
        self._fetch = fetch
        self._limits = limits
        self._registry = registry
        self._owner = owner  # this process's replica id: journal entries say whose write they are
        # Raises Conflict when a vector DB is no longer the generation it was opened as.
        self._current = current or (lambda db: None)
        self._locks = DocumentLocks()
        self.parse_timeout = limits.parse_timeout_seconds

    async def _write(self, db: VectorDB, rows: list[StoredRow], replace: Replace, document_ids: list[str],
                     fence: Fence | None = None) -> None:
        """One all-or-nothing write of whole documents. index.write removes its own rows when it fails;
        the journal entry covers a process killed in the middle (recover() removes its rows later)."""
        keys = sorted({f"{db.collection}/{d}" for d in document_ids})
        ingest_id = uuid.uuid4().hex

        def write() -> None:
            # Across replicas: the metadata store's lock on the same keys (a no-op for one process).
            with self._registry.locked(keys):
                self._current(db)
                if fence is not None:
                    fence()
                self._registry.put(INGESTS, ingest_id, {"ingest_id": ingest_id, "provider_id": db.record.provider_id,
                                                        "collection": db.collection, "owner": self._owner})
                try:
                    db.index.write(db.collection, rows, ingest_id, replace)
                except StackError:
                    self._current(db)  # deleted under us: say that, not the store's words
                    raise
                # Here, not after the await: a caller cancelled meanwhile (a job whose lease was lost)
                # must not leave the entry of a write that completed, or recover() would undo it later.
                self._registry.delete(INGESTS, ingest_id)

        await self._locks.acquire(keys)
        try:
            running = asyncio.ensure_future(asyncio.to_thread(write))
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                # The thread cannot be stopped. Wait for it before giving up the work (and the lock), so
                # that whoever takes it next never writes the same document at the same time.
                while not running.done():
                    try:
                        await asyncio.wait([running])
                    except asyncio.CancelledError:
                        continue
                raise
        finally:
            self._locks.release(keys)

    def recover(self, indexes: dict[str, VectorIndex], alive: Callable[[str | None], bool] = lambda _: False) -> None:
        """Remove the rows of writes a killed process left unfinished: each document whole or absent.
        Writes of live replicas (`alive(owner)`) are under way, not abandoned, and are left alone."""
        for entry in self._registry.list(INGESTS):
            if alive(entry.get("owner")):
                continue
            index = indexes.get(entry["provider_id"])
            if index is None:
                continue
            try:
                removed = index.delete_ingest(entry["collection"], entry["ingest_id"])
            except StackError as exc:
                log.warning("could not undo an unfinished ingest in %s yet: %s", entry["collection"], exc.message)
                continue
            if removed:
                log.warning("removed %d rows of an unfinished ingest in %s (the server stopped during it)",
                            removed, entry["collection"])
            self._registry.delete(INGESTS, entry["ingest_id"])

    # -- rag-tool insert: whole documents ----------------------------------------------------

    async def insert_documents(
        self,
        db: VectorDB,
        documents: list[Document],
        chunk_size_in_tokens: int | None = None,
        overlap_tokens: int | None = None,
        fence: Fence | None = None,
        contextualize: Contextualize | None = None,
    ) -> InsertStats:
        """`contextualize`, given a document's text and its chunks' texts, gives a context line for
        each chunk, stored and embedded before the chunk's text (contextual chunking)."""
        started = time.perf_counter()
        chunk_size_in_tokens = DEFAULT_CHUNK_TOKENS if chunk_size_in_tokens is None else chunk_size_in_tokens
        embedder = db.embedder
        self._check_documents(documents, chunk_size_in_tokens)
        if overlap_tokens is not None and not 0 <= overlap_tokens <= chunk_size_in_tokens // 2:
            raise BadRequest("the chunk overlap must be between 0 and half the chunk size")
        semaphore = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def text_of(doc: Document, position: int) -> tuple[str, str | None]:
            async with semaphore:
                try:
                    found = await document_content(doc.content, doc.mime_type, self._fetch,
                                                   self._limits.max_document_bytes, self.parse_timeout)
                except (BadRequest, PayloadTooLarge) as exc:
                    exc.message = f"documents[{position}] ({doc.document_id}): {exc.message}"
                    raise
            if found.markup is not None:  # written by the extractor (HTML, PDF): clean already
                return found.text, found.markup
            markup = _markup(doc)
            if markup == "markdown":
                return await asyncio.to_thread(clean_markdown, found.text), markup
            return found.text, markup

        texts = await asyncio.gather(*(text_of(doc, i) for i, doc in enumerate(documents)))
        max_bytes = (await asyncio.to_thread(db.index.capabilities, db.collection)).max_chunk_bytes
        prepared: list[list[PreparedChunk]] = []
        for position, (doc, (text, markup)) in enumerate(zip(documents, texts)):
            title = title_of(text)
            # Tiled chunks carry their windows already: a context line could not be embedded with them.
            if self._limits.chunking == "sections" and contextualize is None:
                chunks = await asyncio.to_thread(
                    tile_document, text, doc.document_id, chunk_size_in_tokens, embedder.tokenizer,
                    lambda section: self._window_tokens(embedder, self._prefix(embedder, title, section)
                                                        if self._limits.embed_titles else ""),
                    doc.metadata or {}, markup,
                )
            else:
                chunks = await asyncio.to_thread(
                    split_document, text, doc.document_id, chunk_size_in_tokens, embedder.tokenizer,
                    doc.metadata or {}, overlap_tokens, markup, self._limits.chunking == "structure",
                )
            if not chunks:
                raise BadRequest(f"documents[{position}] ({doc.document_id}) has no text to index")
            if contextualize is not None:
                contexts = await contextualize(text, [c.content for c in chunks])
                for chunk, context in zip(chunks, contexts):
                    if context:
                        chunk.content = f"{context}\n\n{chunk.content}"
            prepared.append(await asyncio.to_thread(self._prepare_text_chunks, chunks, embedder, title, max_bytes))
        total_chunks = sum(len(p) for p in prepared)
        if total_chunks > self._limits.max_chunks_per_request:
            raise PayloadTooLarge(
                f"these documents make {total_chunks} chunks; the limit per request is "
                f"{self._limits.max_chunks_per_request} (send fewer documents or a larger chunk_size_in_tokens)"
            )
        stats = await self._write_documents(db, prepared, fence)
        stats.seconds = time.perf_counter() - started
        log.info(
            "inserted %d documents (%d chunks, %d windows) into %s in %.2f s",
            stats.documents, stats.chunks, stats.windows, db.id, stats.seconds,
        )
        return stats

    def _check_documents(self, documents: list[Document], chunk_size: int) -> None:
        if not documents:
            raise BadRequest("documents must contain at least one document")
        if len(documents) > self._limits.max_documents_per_request:
            raise PayloadTooLarge(
                f"{len(documents)} documents in one request; the limit is {self._limits.max_documents_per_request}"
            )
        if not MIN_CHUNK_TOKENS <= chunk_size <= MAX_CHUNK_TOKENS:
            raise BadRequest(
                f"chunk_size_in_tokens must be between {MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS}, not {chunk_size}"
            )
        seen: set[str] = set()
        for i, doc in enumerate(documents):
            if doc.document_id in seen:
                raise BadRequest(f"documents[{i}].document_id {doc.document_id!r} appears twice in this request")
            seen.add(doc.document_id)

    def _prepare_text_chunks(self, chunks: list[TextChunk], embedder: Embedder, title: str,
                             max_bytes: int) -> list[PreparedChunk]:
        prepared = []
        for chunk in _split_oversized(chunks, max_bytes):
            # Title and section ride outside metadata, so knowledge_search's text stays Llama Stack's.
            stored = {"content": chunk.content, "metadata": chunk.metadata, "title": title}
            if chunk.section:
                stored["section"] = chunk.section
            heading = self._prefix(embedder, title, chunk.section)
            prefix = heading if self._limits.embed_titles else ""
            if isinstance(chunk, TiledChunk) and chunk.windows:
                windows = chunk.windows
            else:
                windows = embedding_windows(chunk.content, embedder.tokenizer, self._window_tokens(embedder, prefix))
            prepared.append(PreparedChunk(chunk.chunk_id, chunk.document_id, stored, windows, index=chunk.index,
                                          prefix=prefix, keyword_prefix=heading if self._limits.index_titles else ""))
        return prepared

    def _prefix(self, embedder: Embedder, title: str, section: str) -> str:
        """The "title > section" line of a chunk."""
        # The section path usually starts with the title heading itself.
        parts = [p for p in dict.fromkeys([title.strip(), *section.split(" > ")]) if p]
        if not parts:
            return ""
        line = " > ".join(parts)
        spans = embedder.tokenizer.offsets(line)
        if len(spans) > MAX_PREFIX_TOKENS:
            line = line[: spans[MAX_PREFIX_TOKENS - 1][1]]
        return line + "\n"

    def _window_tokens(self, embedder: Embedder, prefix: str) -> int:
        limit = min(self._limits.window_tokens or embedder.max_tokens, embedder.max_tokens)
        return max(16, limit - (embedder.tokenizer.count(prefix) if prefix else 0))

    async def _write_documents(self, db: VectorDB, documents: list[list[PreparedChunk]],
                               fence: Fence | None) -> InsertStats:
        stats = InsertStats()
        step: list[list[PreparedChunk]] = []
        step_windows = 0
        for chunks in documents:
            step.append(chunks)
            step_windows += sum(len(c.windows) for c in chunks)
            if step_windows >= WINDOWS_PER_STEP:
                await self._embed_and_write(db, step, stats, fence)
                step, step_windows = [], 0
        if step:
            await self._embed_and_write(db, step, stats, fence)
        return stats

    async def _embed_and_write(self, db: VectorDB, documents: list[list[PreparedChunk]], stats: InsertStats,
                               fence: Fence | None) -> None:
        all_chunks = [c for chunks in documents for c in chunks]
        vectors = await asyncio.to_thread(db.embedder.embed, [w for c in all_chunks for w in c.embedding_inputs()])
        rows_by_doc: dict[str, list[StoredRow]] = {}
        offset = 0
        for chunk in all_chunks:
            rows = rows_by_doc.setdefault(chunk.document_id, [])
            for window, text in enumerate(chunk.windows):
                rows.append(_row(chunk, window, chunk.keyword_prefix + text, vectors[offset]))
                offset += 1
        for document_id, rows in rows_by_doc.items():
            await self._write(db, rows, Replace("document_id", [document_id]), [document_id], fence)
            stats.documents += 1
        stats.chunks += len(all_chunks)
        stats.windows += offset

    # -- vector-io insert: ready-made chunks --------------------------------------------------

    async def insert_chunks(self, db: VectorDB, chunks: list[dict[str, Any]]) -> InsertStats:
        started = time.perf_counter()
        if not chunks:
            raise BadRequest("chunks must contain at least one chunk")
        if len(chunks) > self._limits.max_chunks_per_request:
            raise PayloadTooLarge(
                f"{len(chunks)} chunks in one request; the limit is {self._limits.max_chunks_per_request}"
            )
        prepared = await asyncio.to_thread(self._prepare_chunks, db, chunks)
        needs = [c for c in prepared if c.embedding is None]
        if needs:
            vectors = await asyncio.to_thread(db.embedder.embed, [w for c in needs for w in c.embedding_inputs()])
        rows: list[StoredRow] = []
        offset = 0
        for chunk in prepared:
            if chunk.embedding is not None:
                rows.append(_row(chunk, 0, chunk.windows[0], chunk.embedding))
                continue
            for window, text in enumerate(chunk.windows):
                rows.append(_row(chunk, window, text, vectors[offset]))
                offset += 1
        # The same chunk (document_id and content) inserted again replaces itself instead of doubling.
        replace = Replace("chunk_id", sorted({c.chunk_id for c in prepared}))
        await self._write(db, rows, replace, sorted({c.document_id for c in prepared}))
        return InsertStats(
            documents=len({c.document_id for c in prepared}),
            chunks=len(prepared),
            windows=len(rows),
            seconds=time.perf_counter() - started,
        )

    def _prepare_chunks(self, db: VectorDB, chunks: list[dict[str, Any]]) -> list[PreparedChunk]:
        prepared = []
        # A chunk is stored whole in each of its rows: the index says how large a row's chunk may be.
        max_bytes = db.index.capabilities(db.collection).max_chunk_bytes
        for i, chunk in enumerate(chunks):
            text = content_as_text(chunk.get("content"), f"chunks[{i}].content")
            if not text.strip():
                raise BadRequest(f"chunks[{i}].content is empty")
            metadata = dict(chunk.get("metadata") or {})
            document_id = str(metadata.get("document_id") or (chunk.get("chunk_metadata") or {}).get("document_id") or "")
            if not document_id:
                document_id = "chunk-" + hashlib.sha256(text.encode()).hexdigest()[:16]
            stored = {"content": chunk.get("content"), "metadata": metadata}
            if max_bytes and len(json.dumps(stored).encode()) > max_bytes:
                raise PayloadTooLarge(
                    f"chunks[{i}] is larger than {max_bytes} bytes; split it into smaller chunks"
                )
            chunk_id = hashlib.sha256(f"{document_id}\x00{text}".encode()).hexdigest()[:32]
            embedding = chunk.get("embedding")
            if embedding is not None:
                vector = _check_embedding(embedding, db.record.embedding_dimension, f"chunks[{i}].embedding")
                prepared.append(PreparedChunk(chunk_id, document_id, stored, [text], vector))
                continue
            windows = embedding_windows(text, db.embedder.tokenizer, self._window_tokens(db.embedder, ""))
            prepared.append(PreparedChunk(chunk_id, document_id, stored, windows))
        return prepared


def _markup(doc: Document) -> str | None:
    """Markdown or reST, from the declared type or a name (file name, document id, URL path)."""
    content = doc.content
    uri = content if isinstance(content, str) and not content.startswith("data:") else ""
    if isinstance(content, dict) and isinstance(content.get("uri"), str):
        uri = content["uri"]
    names = [(doc.metadata or {}).get("filename"), doc.document_id, uri.split("?")[0]]
    for name in names:
        found = markup_of(doc.mime_type, name if isinstance(name, str) else None)
        if found:
            return found
    return None


def _row(chunk: PreparedChunk, window: int, text: str, vector: np.ndarray) -> StoredRow:
    row_id = hashlib.sha256(f"{uuid.uuid4().hex}{chunk.chunk_id}{window}".encode()).hexdigest()[:40]
    return StoredRow(row_id, chunk.chunk_id, chunk.document_id, window, text, vector, chunk.stored, chunk.index)


def _check_embedding(value: Any, dimension: int, field: str) -> np.ndarray:
    if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise BadRequest(f"{field} must be a list of numbers")
    if len(value) != dimension:
        raise BadRequest(f"{field} has {len(value)} dimensions; this vector DB uses {dimension}")
    vector = np.asarray(value, dtype=np.float32)
    if not np.all(np.isfinite(vector)):
        raise BadRequest(f"{field} contains NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise BadRequest(f"{field} is all zeros; cosine similarity needs a non-zero vector")
    return vector / norm


def _split_oversized(chunks: list[TextChunk], max_bytes: int) -> list[TextChunk]:
    """A token can stand for a very long run of characters (unknown words); keep each chunk storable
    in a row of `max_bytes` (0: no limit)."""
    if not max_bytes:
        return chunks
    out = []
    for chunk in chunks:
        size = len(json.dumps({"content": chunk.content, "metadata": chunk.metadata}).encode())
        if size <= max_bytes:
            out.append(chunk)
            continue
        parts = math.ceil(size / (max_bytes // 2))
        step = math.ceil(len(chunk.content) / parts)
        for n in range(parts):
            piece = chunk.content[n * step : (n + 1) * step]
            if piece:
                index = chunk.index if n == 0 else -1
                out.append(TextChunk(f"{chunk.chunk_id[:28]}{n:04d}", chunk.document_id, piece, dict(chunk.metadata),
                                     index, chunk.section))
    return out
