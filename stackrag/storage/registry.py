"""Where the server keeps what is registered (models, vector DBs, ...), apart from the vectors.

A namespaced key -> JSON record store behind a small protocol: SQLite here, PostgreSQL (shared by
several replicas) in postgres.py, without the services telling them apart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

from ..errors import NotFound


def require(registry: "Registry", namespace: str, key: str, missing: str) -> dict[str, Any]:
    """The record at (namespace, key); NotFound with the message `missing` when there is none."""
    value = registry.get(namespace, key)
    if value is None:
        raise NotFound(missing)
    return value


class Registry(Protocol):
    # True when several processes may use the store at once (PostgreSQL): nothing that another
    # replica must see may then stay in one process's memory.
    shared: bool

    def put(self, namespace: str, key: str, value: dict[str, Any]) -> None: ...

    def get(self, namespace: str, key: str) -> dict[str, Any] | None: ...

    def list(self, namespace: str) -> list[dict[str, Any]]: ...

    def delete(self, namespace: str, key: str) -> bool: ...

    def locked(self, keys: list[str]) -> AbstractContextManager[None]:
        """Hold `keys` exclusively against every process that shares this store, for the block."""
        ...

    def close(self) -> None: ...


MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS records (
           namespace TEXT NOT NULL,
           key TEXT NOT NULL,
           value TEXT NOT NULL,
           created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
           PRIMARY KEY (namespace, key)
       )""",
]


class SQLiteRegistry:
    shared = False  # one server process owns the file (as it owns a Milvus Lite store)

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by the worker threads; the lock serialises it (writes are rare).
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for number, statement in enumerate(MIGRATIONS[version:], start=version + 1):
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {number}")
                self._conn.execute("COMMIT")

    def put(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO records(namespace, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value",
                (namespace, key, json.dumps(value)),
            )

    def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM records WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, namespace: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT value FROM records WHERE namespace = ? ORDER BY created_at, key", (namespace,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def delete(self, namespace: str, key: str) -> bool:
        with self._lock:
            cur = self._conn.execute("DELETE FROM records WHERE namespace = ? AND key = ?", (namespace, key))
        return cur.rowcount > 0

    def locked(self, keys: list[str]) -> AbstractContextManager[None]:
        # One process owns the file, and it serialises its own writers (services/ingestion.py).
        return nullcontext()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
