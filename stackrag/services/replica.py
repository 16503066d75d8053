"""This server process as one replica among those sharing a metadata store: its id, the presence
it keeps in the registry (how others tell it is alive), and the background jobs it claims and runs.

With a store one process owns (SQLite) the same code runs alone: every other owner is a process
that is gone. With a shared store (PostgreSQL) a replica counts as alive while it renews its
presence; jobs and unfinished writes of a replica that stopped renewing are taken over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Awaitable, Callable

from ..config import JobSettings
from ..storage.jobs import Job, JobQueue
from ..storage.registry import Registry

log = logging.getLogger(__name__)

PRESENCE = "replicas"
# Presence records of replicas gone this long are removed (they only matter for a lease or two).
FORGET_AFTER_SECONDS = 3600.0


class Lease:
    """A running job's hold on its work: `held()` renews it and says whether it is still ours, so a
    job writes its result only while no other replica has taken it over."""

    def __init__(self, replica: Replica, job: Job):
        self._replica = replica
        self._job = job

    async def held(self) -> bool:
        replica, job = self._replica, self._job
        return await asyncio.to_thread(replica.jobs.renew, job, replica.replica_id, replica.settings.lease_seconds)


JobHandler = Callable[[Job, Lease], Awaitable[None]]


class Replica:
    def __init__(self, registry: Registry, jobs: JobQueue, settings: JobSettings):
        self.replica_id = uuid.uuid4().hex
        self.registry = registry
        self.jobs = jobs
        self.settings = settings
        self._handlers: dict[str, JobHandler] = {}
        self._sweeps: list[Callable[[], None]] = []
        self._running: dict[str, tuple[Job, asyncio.Task]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loops: list[asyncio.Task] = []

    def handle(self, kind: str, handler: JobHandler) -> None:
        self._handlers[kind] = handler

    def sweep(self, fn: Callable[[], None]) -> None:
        """Run `fn` (blocking) every lease period on a shared store: clean-up of replicas that died."""
        self._sweeps.append(fn)

    def alive(self, owner: str | None) -> bool:
        if owner == self.replica_id:
            return True
        if owner is None or not self.registry.shared:
            return False
        presence = self.registry.get(PRESENCE, owner)
        return presence is not None and time.time() - presence["seen_at"] < self.settings.lease_seconds

    def submit(self, kind: str, key: str, payload: dict, replace: bool = True) -> None:
        """Queue a job; any replica may run it, this one is told at once (the others poll)."""
        self.jobs.enqueue(kind, key, payload, replace)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def cancel(self, key: str) -> None:
        self.jobs.cancel(key)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.registry.shared:
            await asyncio.to_thread(self._announce)
        self._loops = [asyncio.create_task(self._claim_loop()), asyncio.create_task(self._renew_loop())]

    async def stop(self) -> None:
        """Stop claiming and cancel the jobs under way: their leases run out and another replica
        (or the next start) takes them over."""
        tasks = self._loops + [task for _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()
        self._loop = None
        if self.registry.shared:
            await asyncio.to_thread(self.registry.delete, PRESENCE, self.replica_id)

    def _announce(self) -> None:
        self.registry.put(PRESENCE, self.replica_id, {"replica_id": self.replica_id, "host": socket.gethostname(),
                                                      "pid": os.getpid(), "seen_at": time.time()})

    # -- jobs ---------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        poll = min(1.0, self.settings.lease_seconds / 3)
        while True:
            self._wake.clear()
            while len(self._running) < self.settings.concurrency:
                try:
                    job = await asyncio.to_thread(self.jobs.claim, self.replica_id, self.settings.lease_seconds)
                except Exception as exc:  # the store is away: try again at the next poll
                    log.warning("could not claim jobs: %s", exc)
                    break
                if job is None:
                    break
                self._start(job)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=poll)
            except asyncio.TimeoutError:
                pass

    def _start(self, job: Job) -> None:
        if job.attempts > 1:
            log.warning("job %s (%s) taken over, attempt %d: the replica running it stopped", job.key, job.kind,
                        job.attempts)
        task = asyncio.create_task(self._run(job))
        self._running[job.job_id] = (job, task)

        def done(_: asyncio.Task) -> None:
            self._running.pop(job.job_id, None)
            self._wake.set()  # room for the next job

        task.add_done_callback(done)

    async def _run(self, job: Job) -> None:
        handler = self._handlers.get(job.kind)
        try:
            if handler is None:
                log.error("job %s: no handler for kind %r; dropped", job.key, job.kind)
            else:
                await handler(job, Lease(self, job))
        except asyncio.CancelledError:
            # Stopping, or the lease is lost: the job stays queued for whoever runs it next.
            await asyncio.to_thread(self.jobs.release, job, self.replica_id)
            raise
        except Exception:  # handlers record their own failures; this is a bug, not a reason to retry forever
            log.exception("job %s (%s) failed", job.key, job.kind)
        await asyncio.to_thread(self.jobs.finish, job, self.replica_id)

    async def _renew_loop(self) -> None:
        period = self.settings.lease_seconds / 3
        last_sweep = 0.0
        while True:
            await asyncio.sleep(period)
            running = list(self._running.values())
            try:
                lost = await asyncio.to_thread(self._renew, [job for job, _ in running])
                for job, task in running:
                    if job.job_id in lost:
                        log.warning("job %s is no longer this replica's (taken over, re-queued or cancelled); "
                                    "stopping it", job.key)
                        task.cancel()
                if self.registry.shared and time.monotonic() - last_sweep >= self.settings.lease_seconds:
                    last_sweep = time.monotonic()
                    await asyncio.to_thread(self._sweep)
            except Exception as exc:  # the store is away; leases may run out, which is the point of them
                log.warning("could not renew this replica's presence and jobs: %s", exc)

    def _renew(self, jobs: list[Job]) -> set[str]:
        """Renew the presence and the leases of `jobs`; the ids of the jobs that are no longer ours."""
        if self.registry.shared:
            self._announce()
        return {job.job_id for job in jobs if not self.jobs.renew(job, self.replica_id, self.settings.lease_seconds)}

    def _sweep(self) -> None:
        for fn in self._sweeps:
            fn()
        for presence in self.registry.list(PRESENCE):
            if time.time() - presence["seen_at"] > FORGET_AFTER_SECONDS:
                self.registry.delete(PRESENCE, presence["replica_id"])
