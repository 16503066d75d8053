"""PostgreSQL behind the storage protocols, for several replicas sharing one database: the registry
(records), file contents and the job queue, in tables prefixed `stackrag_`.

Services call the store from worker threads (asyncio.to_thread), so connections come from
psycopg-pool's bounded pool, checked before each use (a connection PostgreSQL closed is replaced);
each is in autocommit mode (every statement is its own transaction) except the migration and key
locks. psycopg is the optional `postgres` extra, imported only when configured.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Callable, Iterator, TypeVar

from ..errors import Unavailable
from .jobs import Job

log = logging.getLogger(__name__)
T = TypeVar("T")

# Connections a process may hold at once: its worker threads (asyncio's default pool is 32), plus a
# few for key locks held while Milvus writes.
MIN_CONNECTIONS = 1
MAX_CONNECTIONS = 40
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
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise Unavailable("metadata_store type postgres needs psycopg and psycopg-pool: "
                              "pip install 'stackrag[postgres]'") from exc
        self._psycopg = psycopg
        params = {"host": host, "port": port, "dbname": db, "user": user, "password": password,
                  "connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "stackrag"}
        self.location = f"{user}@{host}:{port}/{db}"
        self._pool = ConnectionPool(kwargs={**params, "autocommit": True}, min_size=MIN_CONNECTIONS,
                                    max_size=MAX_CONNECTIONS, timeout=CONNECT_TIMEOUT_SECONDS, open=False,
                                    check=ConnectionPool.check_connection, name="stackrag")
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except Exception as exc:  # PoolTimeout and friends: the server is not there
            self._pool.close()
            raise Unavailable(f"PostgreSQL at {self.location} is unreachable: {_first_line(exc)}") from exc
        self.migrate()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._psycopg.OperationalError as exc:
            raise Unavailable(f"PostgreSQL at {self.location} failed: {_first_line(exc)}") from exc
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":
                raise Unavailable(f"PostgreSQL at {self.location}: no connection within "
                                  f"{CONNECT_TIMEOUT_SECONDS} s ({_first_line(exc)})") from exc
            raise

    def run(self, fn: Callable[[Any], T]) -> T:
        """fn(connection) on a pooled connection, checked before use (PostgreSQL may have restarted)."""
        with self.connection() as conn:
            return fn(conn)

    @contextmanager
    def locked(self, keys: list[str]) -> Iterator[None]:
        """Hold `keys` against every process on this database until the block ends: transaction-level
        advisory locks, taken in sorted order (no deadlock), released at commit or when the holder's
        connection dies with its process."""
        with self.connection() as conn:
            with conn.transaction():
                for key in sorted(set(keys)):
                    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
                yield

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
        self._pool.close()


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

    def locked(self, keys: list[str]) -> AbstractContextManager[None]:
        return self._db.locked(keys)

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
