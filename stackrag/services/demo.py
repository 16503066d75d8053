"""The demo knowledge base (`stackrag run --demo`): the Milvus tutorial's four torchtune documents in
the vector DB `demo`, ingested in the background once the server is up.

Each document is checked before it is ingested, so a restart ingests nothing again, and a server
stopped half way (each document is written whole or not at all) ingests only what is missing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..config import DEFAULT_EMBEDDING_MODEL
from ..errors import NotFound, StackError
from ..wire.llama_stack import RAGDocument
from .stack import Stack

log = logging.getLogger(__name__)

DEMO_VECTOR_DB = "demo"
# The tutorial inserts with 1024-token chunks; 512 (the rag-tool default) retrieves better with MiniLM.
CHUNK_SIZE = 512
TRY_IT = 'stackrag ask "What is the Llama3 chat format?" --vector-db demo'


async def fill_demo(stack: Stack, documents: list[dict[str, Any]], origin: str) -> None:
    """Ingest the documents that the demo vector DB does not hold yet; progress and errors go to the log."""
    try:
        await _fill(stack, documents, origin)
    except StackError as exc:
        log.error("demo: could not prepare vector DB %r: %s", DEMO_VECTOR_DB, exc.message)
    except asyncio.CancelledError:
        log.info("demo: stopped with the server; the next start ingests what is missing")
        raise
    except Exception:  # a background task: nobody else would see it
        log.exception("demo: ingestion failed")


async def _fill(stack: Stack, documents: list[dict[str, Any]], origin: str) -> None:
    try:
        stack.vector_dbs.get(DEMO_VECTOR_DB)
    except NotFound:
        await stack.vector_dbs.register(DEMO_VECTOR_DB, DEFAULT_EMBEDDING_MODEL, None, None, None,
                                        "torchtune tutorials (demo)")
        log.info("demo: created vector DB %r", DEMO_VECTOR_DB)
    db = stack.vector_dbs.open(DEMO_VECTOR_DB)
    missing = [d for d in documents
               if not await asyncio.to_thread(db.index.document_chunks, db.collection, d["document_id"])]
    if not missing:
        log.info("demo: vector DB %r already holds the %d tutorial documents; nothing to ingest. Try: %s",
                 DEMO_VECTOR_DB, len(documents), TRY_IT)
        return
    log.info("demo: ingesting %d of %d tutorial documents into vector DB %r from %s",
             len(missing), len(documents), DEMO_VECTOR_DB, origin)
    failed = 0
    for number, document in enumerate(missing, start=1):
        try:
            stats = await stack.rag.insert(DEMO_VECTOR_DB, [RAGDocument.model_validate(document)], CHUNK_SIZE)
        except StackError as exc:
            failed += 1
            log.error("demo: %s failed: %s", document["document_id"], exc.message)
            continue
        log.info("demo: %d/%d %s: %d chunks in %.1f s", number, len(missing), document["document_id"],
                 stats.chunks, stats.seconds)
    if failed:
        log.error("demo: %d of %d documents could not be ingested; restart to retry them", failed, len(missing))
        return
    log.info("demo: vector DB %r is ready with the %d tutorial documents. Try: %s",
             DEMO_VECTOR_DB, len(documents), TRY_IT)
