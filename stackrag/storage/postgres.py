"""PostgreSQL behind the storage protocols, for several replicas sharing one database: the registry
(records), file contents and the job queue, in tables prefixed `stackrag_`.

Services call the store from worker threads (asyncio.to_thread), so connections come from a small
pool, one per thread at a time; each is in autocommit mode (every statement is its own transaction)
except the migration. psycopg is the optional `postgres` extra, imported only when configured.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from ..errors import Unavailable
from .jobs import Job

log = logging.getLogger(__name__)
T = TypeVar("T")

# Connections kept open between calls; more may exist while many threads work at once.
MAX_IDLE_CONNECTIONS = 8
CONNECT_TIMEOUT_SECONDS = 10
# Replicas that start at once migrate one after the other under this transaction-level lock.
MIGRATION_LOCK = 0x737461636B726167  # "stackrag"

MIGRATIONS = [
    """CREATE TABLE stackrag_records (
           namespace TEXT NOT NULL,
           key TEXT NOT NULL,
           value TEXT NOT NULL,
           created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
           PRIMARY KEY (namespace, key)
       )""",
    """CREATE TABLE stackrag_file_contents (
           file_id TEXT PRIMARY KEY,
           data BYTEA NOT NULL
       )""",
    """CREATE TABLE stackrag_jobs (
           key TEXT PRIMARY KEY,
           job_id TEXT NOT NULL,
           kind TEXT NOT NULL,
           payload TEXT NOT NULL,
           owner TEXT,
           lease_until TIMESTAMPTZ,
           attempts INTEGER NOT NULL DEFAULT 0,
           enqueued_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
       )""",
]


class PostgresDatabase:
    def __init__(self, host: str, port: int, db: str, user: str, password: str | None):
        try:
            import psycopg
        except ImportError as exc:
            raise Unavailable("metadata_store type postgres needs psycopg: pip install 'stackrag[postgres]'") from exc
        self._psycopg = psycopg
        self._params = {"host": host, "port": port, "dbname": db, "user": user, "password": password,
                        "connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "stackrag"}
        self.location = f"{user}@{host}:{port}/{db}"
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self.migrate()

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(autocommit=True, **self._params)
        except self._psycopg.OperationalError as exc:
            raise Unavailable(f"PostgreSQL at {self.location} is unreachable: {_first_line(exc)}") from exc

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._lock:
                if conn.closed or conn.broken or len(self._idle) >= MAX_IDLE_CONNECTIONS:
                    conn.close()
                else:
                    self._idle.append(conn)

    def run(self, fn: Callable[[Any], T]) -> T:
        """fn(connection); a pooled connection that died (PostgreSQL restarted) is replaced once."""
        for attempt in (1, 2):
            with self.connection() as conn:
                try:
                    return fn(conn)
                except self._psycopg.OperationalError as exc:
                    conn.close()
                    if attempt == 2:
                        raise Unavailable(f"PostgreSQL at {self.location} failed: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def migrate(self) -> None:
        def apply(conn: Any) -> None:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS stackrag_schema (version INTEGER NOT NULL)")
                row = conn.execute("SELECT max(version) FROM stackrag_schema").fetchone()
                version = row[0] or 0
                for number, statement in enumerate(MIGRATIONS[version:], start=version + 1):
                    conn.execute(statement)
                    conn.execute("INSERT INTO stackrag_schema (version) VALUES (%s)", (number,))
                    log.info("PostgreSQL schema at %s migrated to version %d", self.location, number)

        self.run(apply)

    def schema_version(self) -> int:
        return self.run(lambda c: c.execute("SELECT max(version) FROM stackrag_schema").fetchone()[0] or 0)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresRegistry:
    shared = True

    def __init__(self, database: PostgresDatabase):
        self._db = database

    def put(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        # Text, not JSONB: JSONB reorders keys, and records come back to clients as they were written.
        self._db.run(lambda c: c.execute(
            "INSERT INTO stackrag_records (namespace, key, value) VALUES (%s, %s, %s) "
            "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            (namespace, key, json.dumps(value))))

    def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        row = self._db.run(lambda c: c.execute(
            "SELECT value FROM stackrag_records WHERE namespace = %s AND key = %s", (namespace, key)).fetchone())
        return json.loads(row[0]) if row else None

    def list(self, namespace: str) -> list[dict[str, Any]]:
        rows = self._db.run(lambda c: c.execute(
            "SELECT value FROM stackrag_records WHERE namespace = %s ORDER BY created_at, key",
            (namespace,)).fetchall())
        return [json.loads(r[0]) for r in rows]

    def delete(self, namespace: str, key: str) -> bool:
        cur = self._db.run(lambda c: c.execute(
            "DELETE FROM stackrag_records WHERE namespace = %s AND key = %s", (namespace, key)))
        return cur.rowcount > 0

    def close(self) -> None:
        self._db.close()


class PostgresBlobStore:
    def __init__(self, database: PostgresDatabase):
        self._db = database

    def put(self, blob_id: str, data: bytes) -> None:
        self._db.run(lambda c: c.execute(
            "INSERT INTO stackrag_file_contents (file_id, data) VALUES (%s, %s) "
            "ON CONFLICT (file_id) DO UPDATE SET data = excluded.data", (blob_id, data)))

    def get(self, blob_id: str) -> bytes:
        row = self._db.run(lambda c: c.execute(
            "SELECT data FROM stackrag_file_contents WHERE file_id = %s", (blob_id,)).fetchone())
        if row is None:
            raise KeyError(blob_id)
        return bytes(row[0])

    def delete(self, blob_id: str) -> None:
        self._db.run(lambda c: c.execute("DELETE FROM stackrag_file_contents WHERE file_id = %s", (blob_id,)))


class PostgresJobQueue:
    """Claims use FOR UPDATE SKIP LOCKED, so replicas polling at once never take the same job; lease
    times are the database's clock, so the replicas' clocks do not matter."""

    def __init__(self, database: PostgresDatabase):
        self._db = database

    def enqueue(self, kind: str, key: str, payload: dict[str, Any], replace: bool = True) -> None:
        # A run under way keeps its lease (owner, lease_until): the new job waits until that run
        # has stopped, so two replicas never write the same file's rows at once.
        conflict = ("DO UPDATE SET job_id = excluded.job_id, kind = excluded.kind, payload = excluded.payload, "
                    "attempts = 0, enqueued_at = clock_timestamp()") if replace else "DO NOTHING"
        self._db.run(lambda c: c.execute(
            "INSERT INTO stackrag_jobs (key, job_id, kind, payload) VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT (key) {conflict}", (key, uuid.uuid4().hex, kind, json.dumps(payload))))

    def claim(self, owner: str, lease_seconds: float) -> Job | None:
        row = self._db.run(lambda c: c.execute(
            "UPDATE stackrag_jobs SET owner = %s, lease_until = now() + %s * interval '1 second', "
            "attempts = attempts + 1 "
            "WHERE key = (SELECT key FROM stackrag_jobs WHERE lease_until IS NULL OR lease_until < now() "
            "             ORDER BY enqueued_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
            "RETURNING job_id, kind, key, payload, attempts", (owner, lease_seconds)).fetchone())
        if row is None:
            return None
        return Job(row[0], row[1], row[2], json.loads(row[3]), row[4])

    def renew(self, job: Job, owner: str, lease_seconds: float) -> bool:
        # The lease is on the key: a superseded run still holds it (renewed) until it has stopped.
        row = self._db.run(lambda c: c.execute(
            "UPDATE stackrag_jobs SET lease_until = now() + %s * interval '1 second' "
            "WHERE key = %s AND owner = %s RETURNING job_id", (lease_seconds, job.key, owner)).fetchone())
        return row is not None and row[0] == job.job_id

    def finish(self, job: Job, owner: str) -> bool:
        cur = self._db.run(lambda c: c.execute(
            "DELETE FROM stackrag_jobs WHERE key = %s AND job_id = %s AND owner = %s", (job.key, job.job_id, owner)))
        if cur.rowcount == 1:
            return True
        self.release(job, owner)  # superseded while it ran: the newer job may start now
        return False

    def release(self, job: Job, owner: str) -> None:
        self._db.run(lambda c: c.execute(
            "UPDATE stackrag_jobs SET owner = NULL, lease_until = NULL WHERE key = %s AND owner = %s",
            (job.key, owner)))

    def cancel(self, key: str) -> None:
        self._db.run(lambda c: c.execute("DELETE FROM stackrag_jobs WHERE key = %s", (key,)))

    def close(self) -> None:
        pass  # the registry closes the shared database


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
