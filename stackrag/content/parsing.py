"""HTML and PDF parsing in worker processes, bounded in time and memory.

A hostile document (7 MB of `<b></b>`, 300k nested `<div>`, a PDF that expands without end) costs a
worker's CPU and memory, never the server's: the event loop keeps answering, a parse that takes
longer than `timeout` seconds is stopped by killing its worker (a fresh one takes its place), and a
worker's address space is capped so that a memory bomb fails with an error instead of swapping the
machine. Workers start on first use (spawned, not forked from the threaded server) and are reused.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection
from typing import Any

from ..errors import BadRequest

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# A worker's address space: ample for any real document's parse tree, finite for a bomb's.
WORKER_MEMORY_BYTES = 3 * 1024**3
# A worker is retired after this many parses: parse trees fragment memory that Python keeps.
TASKS_PER_WORKER = 200


def _serve(conn: Connection, memory_bytes: int) -> None:
    """A worker's loop: (function name, args) in, ("ok", text) or ("error", kind, message) out."""
    import resource

    from . import documents

    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ValueError, OSError):
        pass  # the machine's own limit is lower: keep it
    while True:
        try:
            name, args = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", getattr(documents, name)(*args)))
        except MemoryError:
            conn.send(("error", "memory", "parsing it needs more memory than a document may take"))
        except Exception as exc:  # handed back: the server turns it into the right answer
            conn.send(("error", type(exc).__name__, getattr(exc, "message", None) or str(exc)))


class _Worker:
    def __init__(self, memory_bytes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, memory_bytes), daemon=True,
                                        name="stackrag-parser")
        self._process.start()
        child.close()
        self.tasks = 0

    def call(self, name: str, args: tuple[Any, ...], timeout: float) -> Any:
        """Blocking: the result, or TimeoutError (the worker is then dead)."""
        self.tasks += 1
        self._conn.send((name, args))
        if not self._conn.poll(timeout):
            self.kill()
            raise TimeoutError
        return self._conn.recv()

    def alive(self) -> bool:
        return self._process.is_alive()

    def kill(self) -> None:
        self._process.kill()
        self._process.join(5)
        self._conn.close()


class Parsers:
    """A few parse workers shared by every request of the process."""

    def __init__(self, workers: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 memory_bytes: int = WORKER_MEMORY_BYTES) -> None:
        self.timeout = timeout
        self._memory = memory_bytes
        self._slots = threading.BoundedSemaphore(workers or max(1, min(2, os.cpu_count() or 1)))
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def run(self, name: str, *args: Any, what: str = "the document") -> Any:
        """documents.<name>(*args) in a worker; blocking (call it from a thread)."""
        with self._slots:
            worker = self._take()
            try:
                outcome = worker.call(name, args, self.timeout)
            except TimeoutError:
                raise BadRequest(f"parsing {what} took longer than {self.timeout:g} s; it was stopped "
                                 "(is it very large, or deeply nested?)") from None
            except (EOFError, OSError, BrokenPipeError):
                worker.kill()
                raise BadRequest(f"parsing {what} crashed its worker process; it cannot be ingested") from None
            self._give_back(worker)
        if outcome[0] == "ok":
            return outcome[1]
        _, kind, message = outcome
        if kind == "memory":
            raise BadRequest(f"{what}: {message}")
        if kind in ("BadRequest", "PayloadTooLarge"):
            raise BadRequest(message)
        raise BadRequest(f"{what} could not be parsed ({kind}: {message[:200]})")

    async def arun(self, name: str, *args: Any, what: str = "the document") -> Any:
        return await asyncio.to_thread(self.run, name, *args, what=what)

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
        return _Worker(self._memory)

    def _give_back(self, worker: _Worker) -> None:
        if worker.tasks >= TASKS_PER_WORKER or not worker.alive():
            worker.kill()
            return
        with self._lock:
            self._idle.append(worker)

    def close(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.kill()


_shared: Parsers | None = None
_shared_lock = threading.Lock()


def parsers(timeout: float = DEFAULT_TIMEOUT) -> Parsers:
    """The process's parse workers (made on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Parsers(timeout=timeout)
        _shared.timeout = timeout
        return _shared
