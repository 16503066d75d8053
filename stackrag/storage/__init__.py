"""Everything the server keeps besides vectors, chosen by the run config: the registry, file
contents and the job queue. SQLite + a folder by default; PostgreSQL for several replicas."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import RunConfig
from ..errors import BadRequest
from .blobs import BlobStore, Blobs
from .jobs import JobQueue, LocalJobQueue
from .registry import Registry, SQLiteRegistry


@dataclass
class Storage:
    registry: Registry
    blobs: Blobs
    jobs: JobQueue

    def close(self) -> None:
        self.jobs.close()
        self.registry.close()


def open_storage(config: RunConfig) -> Storage:
    store = config.metadata_store
    if store.type == "sqlite":
        registry: Registry = SQLiteRegistry(config.resolve_path(store.db_path or "registry.db"))
        return Storage(registry, _blobs(config, None), LocalJobQueue(registry))
    if store.type == "postgres":
        from .postgres import PostgresBlobStore, PostgresDatabase, PostgresJobQueue, PostgresRegistry

        password = store.password.get_secret_value() if store.password else None
        database = PostgresDatabase(store.host, store.port, store.db, store.user, password)
        return Storage(PostgresRegistry(database), _blobs(config, PostgresBlobStore(database)),
                       PostgresJobQueue(database))
    raise BadRequest(f"metadata_store.type {store.type!r} is not supported (use sqlite or postgres)")


def files_kind(config: RunConfig) -> str:
    """Where file contents live: "postgres" or "directory" (FileStorage says how it is chosen)."""
    return config.files.type or ("postgres" if config.metadata_store.type == "postgres" else "directory")


def _blobs(config: RunConfig, database_blobs: Blobs | None) -> Blobs:
    kind = files_kind(config)
    if kind == "postgres":
        if database_blobs is None:
            raise BadRequest("files.type postgres needs metadata_store.type postgres")
        return database_blobs
    return BlobStore(config.resolve_path(config.files.path or "files"))
