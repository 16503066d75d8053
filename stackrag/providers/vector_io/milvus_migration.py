"""Embedded stores of the releases before the C++ engine: Milvus Lite 3 (a folder at db_path, where
the engine keeps one SQLite file) are copied into the engine when stackrag starts on them.

The order makes a kill at any point safe:
1. the Lite 3 folder is renamed to its backup name beside it (`milvus.db` -> `milvus.lite3.db`), so
   from here on the backup is the source and db_path is free for the engine;
2. the engine starts on db_path and every stackrag collection is copied, rows and vectors, through
   the same MilvusIndex.create and insert as any write (the engine's BM25 function recomputes the
   sparse vectors from the texts);
3. with every row count checked, a marker file is written into the backup.
A start that finds a backup without its marker (a copy cut short) removes the engine's partial file
and copies again. The backup is left for the user to delete once they are content.

Reading Lite 3 needs the pure-Python milvus-lite 3 package, which pymilvus[milvus-lite] installs:
that, and this copy, is what it is still here for.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ...errors import StackError

log = logging.getLogger(__name__)

MARKER = "STACKRAG_MIGRATED.json"
BATCH_ROWS = 1_000
# The fields of a stackrag row (the sparse BM25 vector is derived, so not copied).
ROW_FIELDS = ["row_id", "chunk_id", "document_id", "ingest_id", "window", "chunk_index", "text", "vector", "chunk"]


class MigrationError(StackError):
    status_code = 503


class Target(Protocol):
    def create(self, name: str, dimension: int) -> None: ...

    def insert_rows(self, name: str, rows: list[dict[str, Any]]) -> None: ...

    def count_rows(self, name: str, chunks_only: bool = True) -> int: ...

    def drop(self, name: str) -> None: ...

    def exists(self, name: str) -> bool: ...


def backup_path(db_path: Path) -> Path:
    """Where a Lite 3 store is set aside; it must end in .db for pymilvus to open it as Lite."""
    stem = db_path.name[:-3] if db_path.name.endswith(".db") else db_path.name
    return db_path.with_name(f"{stem}.lite3.db")


def set_aside(db_path: Path) -> Path | None:
    """Before the engine starts on db_path (under its lock): the Lite 3 store to copy from, if any.
    A Lite 3 folder at db_path is renamed to its backup name; a backup without its marker is a copy
    cut short, whose partial engine file is removed."""
    backup = backup_path(db_path)
    if db_path.is_dir():
        if backup.exists():
            raise_conflict(db_path, backup)
        db_path.rename(backup)
        log.warning("%s is a Milvus Lite 3 store (releases before the embedded C++ engine): set aside as %s "
                    "and copied into the engine now", db_path, backup)
        return backup
    if backup.is_dir() and not (backup / MARKER).exists():
        log.warning("the copy of %s into the embedded engine was cut short: starting it again", backup)
        for leftover in (db_path, *(db_path.with_name(db_path.name + s) for s in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        return backup
    return None


def raise_conflict(db_path: Path, backup: Path) -> None:
    raise MigrationError(f"{db_path} is a Milvus Lite 3 store to migrate, but {backup} (where it would be set aside) "
                      "exists already: move one of them away")


def migrate(source: Path, target: Target, db_path: Path) -> dict[str, int]:
    """Copy every stackrag collection of the Lite 3 store `source` (set aside from `db_path`) into
    `target`, the engine now at db_path; rows per collection."""
    try:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=str(source))
    except Exception as exc:  # milvus-lite 3 missing, or its store unreadable
        raise MigrationError(f"could not open the Milvus Lite 3 store {source} to migrate it ({exc}); it needs "
                          "milvus-lite 3 (pip install 'pymilvus[milvus-lite]')") from exc
    started = time.monotonic()
    copied: dict[str, int] = {}
    try:
        for name in sorted(client.list_collections()):
            info = client.describe_collection(name)
            fields = {f["name"]: f for f in info["fields"]}
            if not set(ROW_FIELDS) <= set(fields):
                log.warning("collection %s in %s is not one of stackrag's: not copied (it stays in the backup)",
                            name, source)
                continue
            copied[name] = _copy(client, name, int(fields["vector"]["params"]["dim"]), target)
            log.info("copied %s: %d rows", name, copied[name])
    finally:
        client.close()
    (source / MARKER).write_text(json.dumps({
        "migrated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "collections": copied}, indent=1))
    keywords = db_path.with_name(db_path.name + ".keywords")
    shutil.rmtree(keywords, ignore_errors=True)  # the old in-process keyword index's snapshots
    log.warning("migrated %d collections (%d rows) from Milvus Lite 3 into the embedded engine in %.1f s; the old "
                "store stays at %s until you delete it", len(copied), sum(copied.values()),
                time.monotonic() - started, source)
    return copied


def _copy(client: Any, name: str, dimension: int, target: Target) -> int:
    if target.exists(name):
        target.drop(name)  # from a copy cut short before its engine file was removed
    target.create(name, dimension)
    client.load_collection(name)
    iterator = client.query_iterator(name, batch_size=BATCH_ROWS, filter="", output_fields=ROW_FIELDS)
    total = 0
    try:
        while batch := iterator.next():
            rows = [{field: row[field] for field in ROW_FIELDS} for row in batch]
            for row in rows:
                row["vector"] = [float(x) for x in row["vector"]]
            target.insert_rows(name, rows)
            total += len(rows)
    finally:
        iterator.close()
    expected = int(client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"])
    found = target.count_rows(name, chunks_only=False)
    if found != expected or total != expected:
        raise MigrationError(f"copying {name} from Milvus Lite 3 gave {found} rows of {expected}; the old store is kept "
                          "and the copy starts again at the next start")
    return total
