"""`inline::milvus` (the embedded Milvus engine at `db_path`) and `remote::milvus` (`uri`, `token`):
one implementation, one search path.

The embedded engine is Milvus's own C++ engine, run by this process as a child on a unix socket
(milvus_engine.py); a `remote::milvus` is any Milvus server. Both are spoken to the same way: what
differs (BM25 support, which dense index types an engine allows) is read from the engine, not
branched on the provider type.

One collection per vector DB, with an explicit schema: a row is one embedding window of a chunk,
`document_id` is a top-level field (filters on JSON keys are slow), and `chunk` holds the chunk as
the API returns it. Keyword (BM25) search comes from the server's BM25 function on `text` where it
has one (Milvus >= 2.5, the embedded engine); a hybrid search fuses the server's dense and BM25
results with the formulas of Milvus's rankers (fusion.py). Scores are higher-is-better: cosine
similarity for dense search.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from ...errors import BadRequest, NotFound, Unavailable
from ..protocols import Hit, IndexCapabilities, Replace, SearchRequest, StoredRow
from .fusion import fuse
from .milvus_engine import EngineProcess
from .milvus_migration import migrate
from .term_stats import STOP_WORDS, TermSample

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_TEXT_BYTES = 65_535
# A chunk is stored whole in each of its rows, in a JSON field of at most 64 KiB.
MAX_CHUNK_JSON_BYTES = 60_000
MAX_DOCUMENT_ID_BYTES = 2_048
# A query asks Milvus for this many rows per wanted chunk: a long chunk has several windows, and
# only its best window counts.
OVERFETCH = 4
MAX_SEARCH_LIMIT = 16_384
CONNECT_TIMEOUT_SECONDS = 10.0
TERM_SAMPLE_ROWS = 5_000
# The dense index asked for first; an engine that refuses it names the types it allows (the embedded
# engine allows FLAT, IVF_FLAT and AUTOINDEX), and the first of PREFERRED_INDEXES it allows is used.
DENSE_INDEX = {"index_type": "HNSW", "params": {"M": 16, "efConstruction": 200}}
PREFERRED_INDEXES = ("HNSW", "AUTOINDEX", "IVF_FLAT", "FLAT")
# BM25's analyzer: Milvus's standard tokenizer (identifiers such as lora_rank stay whole, CJK splits
# into characters), lower-cased, without the stop words the relevance check ignores too. On the
# torchtune dev set, keyword MRR@10 0.941 against 0.912 with Milvus's default (which keeps "the",
# "what", ...), and the same as an English stemming analyzer (bench/results/milvus_engines.json).
DEFAULT_ANALYZER = {"tokenizer": "standard",
                    "filter": ["lowercase", {"type": "stop", "stop_words": sorted(STOP_WORDS)}]}
# The cleanup of a failed write waits this long for an embedded engine that is being restarted.
CLEANUP_WAIT_SECONDS = 30.0
# Other replicas write to a Milvus server too, unseen by this process: term samples are re-read after this.
TERM_SAMPLE_SECONDS = 60.0


def collection_name(vector_db_id: str) -> str:
    """Any vector DB id maps to a valid, stable, distinct collection name ([A-Za-z_][A-Za-z0-9_]*)."""
    readable = re.sub(r"[^A-Za-z0-9_]", "_", vector_db_id)[:180]
    digest = hashlib.sha256(vector_db_id.encode()).hexdigest()[:10]
    return f"vdb_{readable}_{digest}"


def quote(value: str) -> str:
    """A Milvus expression string literal; ids never reach an expression unquoted."""
    return json.dumps(value, ensure_ascii=False)


def _server_supports_bm25(version: str) -> bool | None:
    """True/False when the version string tells; None when it does not (then we probe)."""
    # Milvus Lite 3.x says "milvus_lite-3.2.2" and has BM25; the old PyPI "milvus" package says
    # "v2.3.5-lite" and has not, so only the version number decides for everything else. The
    # embedded engine does not implement GetVersion (""): its BM25 is tried (create falls back).
    if version.startswith("milvus_lite"):
        return True
    m = re.search(r"(\d+)\.(\d+)", version)
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2))) >= (2, 5)


class _Probing(logging.Filter):
    """pymilvus logs every refused call as an ERROR with a traceback. Calls made to learn what a
    server can do (GetVersion, which the embedded engine lacks; an index type it may refuse) expect
    refusals: their records are dropped, for the thread making them only."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return threading.get_ident() not in self.threads


_PROBING = _Probing()
logging.getLogger("pymilvus.decorators").addFilter(_PROBING)


@contextmanager
def _probing() -> Iterator[None]:
    ident = threading.get_ident()
    _PROBING.threads.add(ident)
    try:
        yield
    finally:
        _PROBING.threads.discard(ident)


def _is_unimplemented(exc: Exception) -> bool:
    code = getattr(exc, "code", None)
    return callable(code) and getattr(code(), "name", "") == "UNIMPLEMENTED"


def _allowed_indexes(exc: Exception) -> list[str]:
    """The index types an engine says it allows when it refuses one, e.g. the embedded engine's
    "invalid index type: HNSW, local mode only support FLAT IVF_FLAT AUTOINDEX"."""
    m = re.search(r"invalid index type.*?support ([A-Z_ ]+)", str(exc))
    return m.group(1).split() if m else []


def _is_connection_error(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        word in text
        for word in ("unavailable", "connect", "timeout", "timed out", "deadline", "fail to connect", "socket")
    )


class RemoteServer:
    """A Milvus server run by someone else: nothing to start, watch or stop (EngineProcess's
    counterpart for remote::milvus)."""

    generation = 0

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.location = uri

    def start(self) -> None:
        pass

    def check(self) -> None:
        pass

    def wait_ready(self, timeout: float) -> bool:
        return True

    def describe(self, version: str) -> str:
        return version or "(version not reported)"

    def close(self) -> None:
        pass


class MilvusIndex:
    serves = frozenset({"vectors"})

    def __init__(self, provider_id: str, provider_type: str, config: dict[str, Any], data_dir: Path):
        self.provider_id = provider_id
        self.provider_type = provider_type
        self.config = dict(config)
        self.consistency_level = str(self.config.pop("consistency_level", "Strong"))
        # Milvus analyzer_params for the BM25 text field of new collections (null or {}: Milvus's default).
        self.analyzer: dict[str, Any] | None = self.config.pop("analyzer", DEFAULT_ANALYZER)
        self._server, self._client_kwargs = self._connection(self.config, data_dir)
        self.location = self._server.location
        self._client: Any = None
        self._bm25: bool | None = None
        # The dense index new collections get, and the one each loaded collection has.
        self._dense_index = dict(DENSE_INDEX)
        self._index_types: dict[str, str] = {}
        self._loaded: set[str] = set()
        self._schema_cache: dict[str, bool] = {}
        # Term statistics sampled from the collections (with the time they were read), dropped when
        # this process writes.
        self._term_samples: dict[str, tuple[float, TermSample]] = {}
        self._sample_lock = threading.Lock()
        self._generation = 0
        self._server.start()
        source = getattr(self._server, "migration_source", None)
        if source is not None:  # an embedded store of a release before the engine
            try:
                migrate(source, self, self._server.db_path)
            except BaseException:
                self.close()
                raise

    # -- connection --------------------------------------------------------------------------

    def _connection(self, config: dict[str, Any], data_dir: Path) -> tuple[EngineProcess | RemoteServer, dict]:
        """Where Milvus is (an engine this process runs, or a server) and the client's arguments."""
        if self.provider_type.startswith("inline::"):
            db_path = config.get("db_path") or "milvus.db"
            path = Path(str(db_path)).expanduser()
            if not path.is_absolute():
                path = data_dir / path
            engine = EngineProcess(path, log_level=str(config.get("engine_log_level") or "ERROR"))
            # pymilvus pings every 10 s even when idle; the engine's gRPC server allows one ping per
            # 5 minutes without calls and answers more with GOAWAY "too_many_pings", which left the
            # channel dead after ~40 s idle. Its socket is local: ping less often than it allows.
            grpc_options = {"grpc.keepalive_time_ms": 330_000}
            return engine, {"uri": engine.uri, "timeout": CONNECT_TIMEOUT_SECONDS, "grpc_options": grpc_options}
        if not config.get("uri"):
            raise BadRequest(f"vector_io provider {self.provider_id} (remote::milvus) needs config.uri")
        kwargs = {k: v for k, v in config.items()
                  if v is not None and k not in ("kvstore", "persistence", "engine_log_level")}
        kwargs.setdefault("timeout", CONNECT_TIMEOUT_SECONDS)
        return RemoteServer(str(config["uri"])), kwargs

    def _connect(self) -> Any:
        self._server.check()
        if self._server.generation != self._generation:
            # A restarted engine: the old channel is dead and its collections are not loaded.
            self._drop_client()
            self._generation = self._server.generation
        if self._client is not None:
            return self._client
        from pymilvus import MilvusClient

        try:
            self._client = MilvusClient(**self._client_kwargs)
        except Exception as exc:  # pymilvus raises several unrelated types on a failed connect
            raise Unavailable(
                f"Milvus at {self.location} is unreachable ({type(exc).__name__}); "
                "check that it is running and that the provider's uri/token are right"
            ) from exc
        return self._client

    def _call(self, fn: Callable[[Any], T]) -> T:
        """Run one Milvus operation; a lost connection becomes 503 and a fresh connect next time."""
        # A connection that broke while Milvus was away fails once more after it is back: one retry
        # on a fresh connection tells a stale channel from a Milvus that is really gone.
        for attempt in (1, 2):
            client = self._connect()
            try:
                return fn(client)
            except (BadRequest, NotFound, Unavailable):
                raise
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                self._drop_client()
                if attempt == 2:
                    self._server.check()  # says "restarting" when that is why
                    raise Unavailable(f"Milvus at {self.location} is unreachable: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._loaded.clear()
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken connection may fail too; it is gone either way
                pass

    def close(self) -> None:
        self._drop_client()
        self._server.close()

    # -- capabilities -------------------------------------------------------------------------

    def server_version(self) -> str:
        """The server's version string; "" from an engine without GetVersion (the embedded one)."""
        def version(client: Any) -> str:
            try:
                with _probing():
                    return str(client.get_server_version())
            except Exception as exc:
                if _is_unimplemented(exc):
                    return ""
                raise

        return self._call(version)

    def _supports_bm25(self) -> bool:
        """Whether the server runs BM25 itself (a Milvus server >= 2.5, the embedded engine)."""
        if self._bm25 is None:
            version = self.server_version()
            known = _server_supports_bm25(version)
            self._bm25 = True if known is None else known
            if not self._bm25:
                log.warning(
                    "Milvus at %s (version %s) has no BM25/hybrid search: keyword and hybrid queries fall "
                    "back to dense vector search",
                    self.location,
                    version,
                )
        return self._bm25

    def _has_sparse(self, name: str) -> bool:
        if name not in self._schema_cache:
            info = self._call(lambda c: c.describe_collection(name))
            # The BM25 function, not just a field named "sparse", makes keyword search possible (the
            # embedded engine lists no functions but marks the field as a function's output).
            self._schema_cache[name] = any(
                "sparse" in (f.get("output_field_names") or []) for f in info.get("functions") or []
            ) or any(f["name"] == "sparse" and f.get("is_function_output") for f in info.get("fields") or [])
        return self._schema_cache[name]

    def capabilities(self, name: str | None = None) -> IndexCapabilities:
        full = self._has_sparse(name) if name else self._supports_bm25()
        dense_index = self._index_types.get(name, "") if name else str(self._dense_index["index_type"])
        if full:
            return IndexCapabilities(keyword=True, hybrid=True, dense_index=dense_index,
                                     max_chunk_bytes=MAX_CHUNK_JSON_BYTES)
        return IndexCapabilities(
            keyword=False,
            hybrid=False,
            dense_index=dense_index,
            max_chunk_bytes=MAX_CHUNK_JSON_BYTES,
            note="this Milvus has no BM25 full-text search (needs Milvus >= 2.5): keyword and hybrid "
            "queries fall back to dense vector search",
        )

    def term_coverage(self, name: str, question: str, texts: list[str]) -> float | None:
        self.load(name)
        # Milvus does not expose its BM25 statistics; term weights for the coverage check are
        # estimated from a sample of the collection instead (term_stats.py).
        entry = self._term_samples.get(name)
        if entry is None or time.monotonic() - entry[0] > TERM_SAMPLE_SECONDS:
            # One thread reads a sample (16 clients on a cold collection made 16 reads of 5,000 rows,
            # seconds each); the others wait only when there is none yet, else use the old one.
            if self._sample_lock.acquire(blocking=entry is None):
                try:
                    current = self._term_samples.get(name)
                    if current is None or current is entry:  # not refreshed by another thread meanwhile
                        current = (time.monotonic(), self._read_term_sample(name))
                        self._term_samples[name] = current
                    entry = current
                finally:
                    self._sample_lock.release()
        return entry[1].coverage(question, texts)

    def _read_term_sample(self, name: str) -> TermSample:
        rows = self._call(lambda c: c.query(name, filter="", limit=TERM_SAMPLE_ROWS, output_fields=["text"]))
        return TermSample(r["text"] for r in rows)

    def health(self) -> dict[str, str]:
        try:
            version = self.server_version()
        except Unavailable as exc:
            return {"status": "Error", "message": exc.message}
        caps = self.capabilities()
        message = f"Milvus {self._server.describe(version)} at {self.location}"
        if caps.note:
            message += f"; {caps.note}"
        return {"status": "OK", "message": message}

    # -- collections --------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        return self._call(lambda c: c.has_collection(name))

    def create(self, name: str, dimension: int) -> None:
        if self.exists(name):
            return
        bm25 = self._supports_bm25()
        try:
            self._call(lambda c: self._create(c, name, dimension, bm25))
        except Unavailable:
            raise
        except Exception as exc:
            if not bm25:
                raise
            # A server that reports a new version but lacks BM25 (e.g. a restricted cloud tier).
            log.warning("creating %s with BM25 failed (%s); using dense search only", name, exc)
            self._bm25 = False
            # The failed attempt can leave a half-made collection (Milvus 2.3 keeps it, sparse field
            # included, and dies when loading it): anything here now is that leftover.
            if self.exists(name):
                self._call(lambda c: c.drop_collection(name))
            self._call(lambda c: self._create(c, name, dimension, False))
        self._schema_cache.pop(name, None)
        self._index_types[name] = str(self._dense_index["index_type"])
        self._loaded.add(name)

    def _create(self, client: Any, name: str, dimension: int, bm25: bool) -> None:
        from pymilvus import DataType, Function, FunctionType

        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row_id", DataType.VARCHAR, max_length=64, is_primary=True)
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=64)
        schema.add_field("document_id", DataType.VARCHAR, max_length=MAX_DOCUMENT_ID_BYTES)
        schema.add_field("ingest_id", DataType.VARCHAR, max_length=64)
        schema.add_field("window", DataType.INT32)
        schema.add_field("chunk_index", DataType.INT32)
        if bm25:
            analyzer = {"analyzer_params": self.analyzer} if self.analyzer else {}
            schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, enable_analyzer=True, **analyzer)
        else:
            schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        schema.add_field("chunk", DataType.JSON)
        if bm25:
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="text_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
        try:
            with _probing():
                self._create_collection(client, name, schema, bm25)
        except Exception as exc:
            allowed = _allowed_indexes(exc)
            usable = [t for t in PREFERRED_INDEXES if t in allowed and t != self._dense_index["index_type"]]
            if not usable:
                raise
            log.info("Milvus at %s allows the dense index types %s; using %s", self.location, allowed, usable[0])
            self._dense_index = {"index_type": usable[0], "params": {}}
            if client.has_collection(name):
                client.drop_collection(name)
            self._create_collection(client, name, schema, bm25)

    def _create_collection(self, client: Any, name: str, schema: Any, bm25: bool) -> None:
        index = client.prepare_index_params()
        index.add_index("vector", metric_type="COSINE", **self._dense_index)
        if bm25:
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection(name, schema=schema, index_params=index, consistency_level=self.consistency_level)
        client.load_collection(name)

    def drop(self, name: str) -> None:
        self._call(lambda c: c.drop_collection(name))
        self._loaded.discard(name)
        self._schema_cache.pop(name, None)
        self._term_samples.pop(name, None)

    def load(self, name: str) -> None:
        """Collections come back unloaded after a restart of Milvus; searching them needs a load."""
        if name in self._loaded:
            return
        if not self.exists(name):
            raise NotFound(f"the Milvus collection {name} is missing at {self.location}")
        self._call(lambda c: c.load_collection(name))
        self._index_types[name] = self._call(lambda c: _dense_index_type(c, name))
        self._loaded.add(name)

    # -- rows ---------------------------------------------------------------------------------

    def _row(self, row: StoredRow, ingest_id: str) -> dict[str, Any]:
        return {
            "row_id": row.row_id,
            "chunk_id": row.chunk_id,
            "document_id": row.document_id,
            "ingest_id": ingest_id,
            "window": row.window,
            "chunk_index": row.chunk_index,
            "text": _clip_utf8(row.text, MAX_TEXT_BYTES),
            "vector": row.vector.astype(np.float32).tolist(),
            "chunk": row.chunk,
        }

    def insert_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.load(name)
        for start in range(0, len(rows), 1000):
            batch = rows[start : start + 1000]
            self._call(lambda c: c.insert(name, batch))

    def name_for(self, resource_id: str) -> str:
        return collection_name(resource_id)

    def write(self, name: str, rows: list[StoredRow], ingest_id: str, replace: Replace | None) -> None:
        """Insert rows, then delete older rows that `replace` selects (a re-insert replaces).

        New rows land before old ones go, so a failure mid-way leaves the old version whole; the
        partial new rows are removed before the error is raised.
        """
        records = [self._row(r, ingest_id) for r in rows]
        try:
            self.insert_rows(name, records)
        except Exception:
            self._delete_quietly(name, f"ingest_id == {quote(ingest_id)}")
            raise
        self._term_samples.pop(name, None)
        if replace is not None and replace.values:
            self._delete_rows(name, replace.field, replace.values, keep_ingest=ingest_id)
        # Searches over unflushed rows are slower (growing segments); flushing once per ingest is cheap.
        self._call(lambda c: c.flush(name))

    def _delete_quietly(self, name: str, expr: str) -> None:
        # When the write failed because the embedded engine died, its restart takes a second: the
        # partial rows can go then rather than at the next start of stackrag (Ingestion.recover).
        self._server.wait_ready(CLEANUP_WAIT_SECONDS)
        try:
            self._call(lambda c: c.delete(name, filter=expr))
        except Exception as exc:
            log.error("could not remove a failed ingest's rows from %s: %s", name, exc)

    def _delete_rows(self, name: str, field: str, values: list[str], keep_ingest: str | None = None) -> None:
        """Delete rows whose `field` is in `values` (except those of ingest `keep_ingest`)."""
        expr = f"{field} in [{', '.join(quote(v) for v in values)}]"
        if keep_ingest is not None:
            expr += f" and ingest_id != {quote(keep_ingest)}"
        self._call(lambda c: c.delete(name, filter=expr))
        self._term_samples.pop(name, None)

    def delete_ingest(self, name: str, ingest_id: str) -> int:
        if not self.exists(name):
            return 0
        self.load(name)
        expr = f"ingest_id == {quote(ingest_id)}"
        found = self._call(lambda c: c.query(name, filter=expr, output_fields=["count(*)"]))
        self._delete_rows(name, "ingest_id", [ingest_id])
        self._call(lambda c: c.flush(name))
        return int(found[0]["count(*)"])

    def delete_documents(self, name: str, document_ids: list[str]) -> None:
        self._delete_rows(name, "document_id", document_ids)
        self._call(lambda c: c.flush(name))

    def count_rows(self, name: str, chunks_only: bool = True) -> int:
        self.load(name)
        expr = "window == 0" if chunks_only else ""
        result = self._call(lambda c: c.query(name, filter=expr, output_fields=["count(*)"]))
        return int(result[0]["count(*)"])

    def document_chunks(self, name: str, document_id: str, with_vectors: bool = False) -> list[dict[str, Any]]:
        self.load(name)
        fields = ["chunk", "chunk_index", *(["vector", "chunk_id"] if with_vectors else [])]
        rows = self._call(lambda c: c.query(
            name, filter=f"document_id == {quote(document_id)} and window == 0", limit=16_384, output_fields=fields,
        ))
        ordered = sorted(rows, key=lambda r: r["chunk_index"])
        if not with_vectors:
            return [r["chunk"] for r in ordered]
        return [{**r["chunk"], "chunk_id": r["chunk_id"], "embedding": [float(x) for x in r["vector"]]}
                for r in ordered]

    def document_heads(self, name: str, limit: int) -> list[Hit]:
        self.load(name)
        rows = self._call(lambda c: c.query(
            name, filter="chunk_index == 0 and window == 0", limit=limit,
            output_fields=["chunk_id", "document_id", "chunk", "text"],
        ))
        return [Hit(r["chunk_id"], r["document_id"], r["chunk"], 0.0, r.get("text") or "") for r in rows]

    # -- search -------------------------------------------------------------------------------

    def search(self, name: str, request: SearchRequest) -> list[Hit]:
        self.load(name)
        mode = request.mode
        if mode in ("keyword", "hybrid") and not self._has_sparse(name):
            log.info("%s search on %s falls back to dense vector search (no BM25 on this Milvus)", mode, name)
            mode = "vector"
        if mode == "keyword" and not request.text.strip():
            return []
        limit = min(MAX_SEARCH_LIMIT, max(1, request.limit) * OVERFETCH)
        expr = ""
        if request.document_ids is not None:
            if not request.document_ids:
                return []
            expr = "document_id in [" + ", ".join(quote(d) for d in request.document_ids) + "]"
        query = None if request.vector is None else np.asarray(request.vector, dtype=np.float32)
        found = self._call(lambda c: self._search(c, name, mode, request, query, limit, expr))
        best: dict[str, Hit] = {}
        for entity, score, similarity in found:
            hit = best.get(entity["chunk_id"])
            if hit is None or score > hit.score:
                best[entity["chunk_id"]] = Hit(entity["chunk_id"], entity["document_id"], entity["chunk"], score,
                                               entity.get("text") or "", similarity)
            elif similarity is not None and (hit.similarity is None or similarity > hit.similarity):
                hit.similarity = similarity
        hits = sorted(best.values(), key=lambda h: h.score, reverse=True)
        return hits[: request.limit]

    def _search(self, client: Any, name: str, mode: str, request: SearchRequest, query: np.ndarray | None,
                limit: int, expr: str) -> list[tuple[dict[str, Any], float, float | None]]:
        """Search done by the server, one leg per search: (row, score, cosine) best first. A hybrid
        search fuses its dense and BM25 legs here (fusion.py says why not with hybrid_search)."""
        fields = ["chunk_id", "document_id", "chunk", "text"]
        dense: list[dict[str, Any]] = []
        if mode != "keyword":
            params: dict[str, Any] = {"metric_type": "COSINE"}
            if self._index_types.get(name) == "HNSW":
                params["params"] = {"ef": max(64, limit)}
            dense = client.search(name, data=[request.vector.tolist()], anns_field="vector", limit=limit, filter=expr,
                                  output_fields=fields, search_params=params)[0]
        if mode == "vector":
            return [(item["entity"], float(item["distance"]), float(item["distance"])) for item in dense]
        # In a hybrid search the BM25 leg brings the vectors too, for the cosine of rows only it found.
        from pymilvus import MilvusException

        try:
            with _probing():
                sparse = client.search(name, data=[request.text], anns_field="sparse", limit=limit, filter=expr,
                                       output_fields=fields if mode == "keyword" else [*fields, "vector"],
                                       search_params={"metric_type": "BM25"})[0]
        except MilvusException as exc:
            # The C++ engine's BM25 divides by the mean document length, which a collection without
            # rows (new, or emptied by deletes) does not have: it refuses with "NaN or Inf".
            if "NaN or Inf" not in str(exc):
                raise
            sparse = []
        # (Milvus Lite 3 reports BM25 scores negated.)
        if mode == "keyword":
            return [(item["entity"], abs(float(item["distance"])), None) for item in sparse]
        rows = {item["id"]: item["entity"] for item in (*sparse, *dense)}
        cosines = {item["id"]: float(item["distance"]) for item in dense}
        fused = fuse([(item["id"], float(item["distance"])) for item in dense],
                     [(item["id"], abs(float(item["distance"]))) for item in sparse], request.ranker, limit)
        return [(rows[i], score, cosines[i] if i in cosines else _cosine(query, rows[i].get("vector")))
                for i, score in fused]


def _dense_index_type(client: Any, name: str) -> str:
    try:
        return str(client.describe_index(name, "vector").get("index_type", ""))
    except Exception as exc:  # a collection made elsewhere, its index named otherwise
        if _is_connection_error(exc):
            raise
        return ""


def _cosine(query: np.ndarray | None, vector: Any) -> float | None:
    if query is None or vector is None:
        return None
    v = np.asarray(vector, dtype=np.float32)
    return float(v @ query / max(float(np.linalg.norm(v) * np.linalg.norm(query)), 1e-12))


def _clip_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")
