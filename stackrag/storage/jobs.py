"""Background jobs (vector-store file ingestion) that exactly one process runs at a time.

A job is claimed with a lease: its owner renews it while it works, and a job whose lease ran out
(its owner died) can be claimed again by anyone. A job is keyed by what it works on, so queueing
the same work again replaces the job (and the run in progress loses its lease). The PostgreSQL
queue, shared by replicas, is in postgres.py; `LocalJobQueue` is the single-process one.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from .registry import Registry


@dataclass(frozen=True)
class Job:
    job_id: str  # one queueing of `key`: a re-queued key gets a new id, which ends the old run's lease
    kind: str
    key: str
    payload: dict[str, Any]
    attempts: int  # claims so far, this one included; above 1, an earlier owner stopped mid-way


class JobQueue(Protocol):
    def enqueue(self, kind: str, key: str, payload: dict[str, Any], replace: bool = True) -> None:
        """Queue work on `key`; with replace=False an existing job for the key is kept as it is."""
        ...

    def claim(self, owner: str, lease_seconds: float) -> Job | None:
        """The oldest job nobody holds a lease on, now leased to `owner`; None when there is none."""
        ...

    def renew(self, job: Job, owner: str, lease_seconds: float) -> bool:
        """Extend the lease; False when the job is no longer this owner's (taken over, cancelled, re-queued)."""
        ...

    def finish(self, job: Job, owner: str) -> bool:
        """Remove a job its owner is done with; False when it was no longer the owner's."""
        ...

    def release(self, job: Job, owner: str) -> None:
        """Give an unfinished job back (this owner is stopping): claimable again at once."""
        ...

    def cancel(self, key: str) -> None: ...

    def close(self) -> None: ...


JOBS = "jobs"


class LocalJobQueue:
    """Jobs as registry records for a store that one process owns (SQLite): leases live in memory,
    and whatever a previous process left unfinished is simply claimable again."""

    def __init__(self, registry: Registry):
        self._registry = registry
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}  # key -> job_id of the runs under way in this process

    def enqueue(self, kind: str, key: str, payload: dict[str, Any], replace: bool = True) -> None:
        with self._lock:
            if not replace and self._registry.get(JOBS, key) is not None:
                return
            self._registry.put(JOBS, key, {"job_id": uuid.uuid4().hex, "kind": kind, "key": key,
                                           "payload": payload, "attempts": 0})

    def claim(self, owner: str, lease_seconds: float) -> Job | None:
        with self._lock:
            for record in self._registry.list(JOBS):
                # A key whose older run is still going waits for it, as on PostgreSQL it waits for the lease.
                if record["key"] in self._held:
                    continue
                record["attempts"] += 1
                self._registry.put(JOBS, record["key"], record)
                self._held[record["key"]] = record["job_id"]
                return Job(record["job_id"], record["kind"], record["key"], record["payload"], record["attempts"])
        return None

    def _current(self, job: Job) -> bool:
        record = self._registry.get(JOBS, job.key)
        return record is not None and record["job_id"] == job.job_id

    def renew(self, job: Job, owner: str, lease_seconds: float) -> bool:
        with self._lock:
            return self._current(job)

    def finish(self, job: Job, owner: str) -> bool:
        with self._lock:
            if self._held.get(job.key) == job.job_id:
                del self._held[job.key]
            if not self._current(job):
                return False
            self._registry.delete(JOBS, job.key)
            return True

    def release(self, job: Job, owner: str) -> None:
        with self._lock:
            if self._held.get(job.key) == job.job_id:
                del self._held[job.key]

    def cancel(self, key: str) -> None:
        with self._lock:
            self._registry.delete(JOBS, key)

    def close(self) -> None:
        pass
