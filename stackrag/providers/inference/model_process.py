"""The local chat model runs in a process of its own, which this supervisor starts and keeps running.

A native fault in llama.cpp (an instruction the CPU traps, a bad file, an out-of-memory kill) ends
the model's process, never the server: requests meanwhile get a clear 503, a stream in flight ends
with its error event, and the model comes back after a backoff (1 s, doubling to 30 s; reset by a
minute of health). A variant that dies of SIGILL is not tried again: the next best one is.

Processes that share a data dir (`stackrag run --workers N`) share one model process: whichever
holds the lock file supervises it and publishes where it listens in a state file (mode 0600, with
the token the model process requires); the others read that file, and take over the lock, and the
model, when the supervising process dies (the model process exits with its parent).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from ...errors import StackError, Unavailable
from . import cpu_variants
from .llama_worker import TOKEN_ENV, installed_variants

log = logging.getLogger(__name__)

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
HEALTHY_UPTIME = 60.0
# Loading joins the packaged weights on the first start (~500 MB), then maps the file.
LOAD_TIMEOUT = 300.0


@dataclass
class ModelStatus:
    # starting | ready | restarting | failed | stopped
    state: str = "starting"
    model: str = ""
    variant: str = ""
    message: str = ""
    pid: int | None = None
    port: int | None = None
    restarts: int = 0
    # Variants whose process died of SIGILL here: never tried again by this supervisor.
    faulted: list[str] = field(default_factory=list)
    # CPU features the machine reports but this model process may not use (proved unusable).
    refused_features: list[str] = field(default_factory=list)
    token: str = field(default="", repr=False)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("token", "port")}


class ModelProcess:
    """One GGUF file served by one supervised process."""

    def __init__(self, model_id: str, locate: Callable[[], Path], n_ctx: int, threads: int, run_dir: Path,
                 variant: str | None = None, python: str = sys.executable):
        self.model_id = model_id
        self._locate = locate
        self._n_ctx = n_ctx
        self._threads = threads
        self._variant = variant
        self._python = python
        key = hashlib.sha256(f"{model_id}|{n_ctx}|{threads}|{variant}".encode()).hexdigest()[:12]
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_path = run_dir / f"llm-{key}.lock"
        self._state_path = run_dir / f"llm-{key}.json"
        self._status = ModelStatus(model=model_id)
        self._leading = False
        self._closing = threading.Event()
        self._child: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()

    # -- what the provider asks -------------------------------------------------------------

    def start(self) -> None:
        """Begin (once) in the background; the server does not wait for the model."""
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"llm:{self.model_id}", daemon=True)
                self._thread.start()

    def status(self) -> ModelStatus:
        if self._leading:
            return self._status
        return self._read_state() or self._status

    async def address(self, wait: float) -> tuple[str, str]:
        """Base URL and token of the model process. A request that comes while the model is (re)starting
        waits for it up to `wait` seconds; then, or at once when it cannot run, Unavailable (503)."""
        self.start()
        deadline = time.monotonic() + wait
        status = self.status()
        while status.state in ("starting", "restarting") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            status = self.status()
        if status.state != "ready" or not status.port:
            raise Unavailable(self.unavailable_message(status))
        return f"http://127.0.0.1:{status.port}/v1", status.token

    def unavailable_message(self, status: ModelStatus | None = None) -> str:
        status = status or self.status()
        what = f"the local chat model {self.model_id}"
        if status.state == "failed":
            return f"{what} cannot run: {status.message}"
        if status.state in ("restarting", "stopped") and status.message:
            return f"{what} is restarting ({status.message}); retry in a few seconds"
        return f"{what} is starting; retry in a few seconds"

    def wait_ready(self, timeout: float) -> ModelStatus:
        """Block until the model serves or fails (doctor and tests); returns the last status."""
        self.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status.state in ("ready", "failed"):
                return status
            time.sleep(0.1)
        return self.status()

    def close(self) -> None:
        self._closing.set()
        self._stop_child()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- supervision ---------------------------------------------------------------------

    def _run(self) -> None:
        lock = open(self._lock_path, "a+")
        try:
            while not self._closing.is_set():
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._closing.wait(1.0)  # another process supervises; follow its state file
                    continue
                self._leading = True
                try:
                    self._supervise()
                finally:
                    self._leading = False
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except Exception:  # the supervisor must not die silently: say why, and stay "failed"
            log.exception("supervisor of %s stopped", self.model_id)
            self._publish(state="failed", message="its supervisor stopped; see the server log")
        finally:
            lock.close()

    def _candidates(self) -> tuple[list[str], list[str]]:
        """The CPU variants to try, best first, and the features the CPU reports but refuses."""
        available = installed_variants()
        cpu = cpu_variants.probe(self._python)
        if self._variant:
            if available and self._variant not in available:
                raise Unavailable(f"cpu_variant {self._variant!r} is not built here (built: {', '.join(available)})")
            return [self._variant], cpu.refused()
        if not available:
            log.warning("llama-cpp-python has no CPU variants (not built by `make install`?): its own CPU "
                        "backend is used, which may be tuned to the machine that compiled it")
            return [""], cpu.refused()
        ranked = cpu_variants.ranked_variants(cpu, available)
        if not ranked:
            raise Unavailable(f"no llama.cpp CPU variant fits this CPU (built: {', '.join(available)})")
        faulted = known_faults()
        self._status.faulted = [v for v in ranked if v in faulted]
        return [v for v in ranked if v not in faulted] or ranked[-1:], cpu.refused()

    def _remember_fault(self, variant: str) -> None:
        path = faults_file()
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            known = {}
        signature = cpu_variants.signature()
        known[signature] = sorted({*known.get(signature, []), variant})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(known))
        except OSError as exc:
            log.warning("could not record the fault of CPU variant %s in %s: %s", variant, path, exc)

    def _supervise(self) -> None:
        token = secrets.token_urlsafe(24)
        try:
            candidates, refused = self._candidates()
            path = self._locate()
        except StackError as exc:
            self._publish(state="failed", message=exc.message, token=token)
            self._closing.wait(MAX_BACKOFF)
            return
        self._status.refused_features = refused
        backoff = FIRST_BACKOFF
        restarts = 0
        while not self._closing.is_set():
            variant = candidates[0]
            started = time.monotonic()
            outcome = self._serve_once(path, variant, token, restarts)
            if self._closing.is_set():
                break
            uptime = time.monotonic() - started
            if outcome.get("signal") == signal.SIGILL and len(candidates) > 1:
                log.error("the chat model died of SIGILL on CPU variant %s: trying %s", variant, candidates[1])
                self._status.faulted = [*self._status.faulted, variant]
                self._remember_fault(variant)
                candidates = candidates[1:]
                backoff = 0.0
            elif "error" in outcome:
                self._publish(state="failed", message=outcome["error"], pid=None, port=None)
                backoff = MAX_BACKOFF
            elif uptime > HEALTHY_UPTIME:
                backoff = FIRST_BACKOFF
            restarts += 1
            if self._status.state != "failed":
                self._publish(state="restarting", pid=None, port=None, restarts=restarts)
            self._closing.wait(backoff)
            # A process that keeps dying waits longer each time, up to MAX_BACKOFF.
            backoff = min(max(backoff, FIRST_BACKOFF / 2) * 2, MAX_BACKOFF)

    def _serve_once(self, path: Path, variant: str, token: str, restarts: int) -> dict[str, Any]:
        """Start the model process, publish it once ready, and return how it ended."""
        self._publish(state="starting" if restarts == 0 else "restarting", variant=variant or "built-in",
                      token=token, restarts=restarts)
        cmd = [self._python, "-m", "stackrag.providers.inference.llama_worker", "--model", str(path),
               "--model-id", self.model_id, "--variant", variant, "--n-ctx", str(self._n_ctx),
               "--threads", str(self._threads)]
        env = {**os.environ, TOKEN_ENV: token}
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
        self._child = child
        line = _first_line(child.stdout, LOAD_TIMEOUT)
        announced = _parse(line or "")
        if line is None:  # silent all along: hung while loading
            self._stop_child()
            return {"error": f"its process did not load {path.name} within {LOAD_TIMEOUT:.0f} s"}
        if announced.get("ready"):
            self._publish(state="ready", pid=child.pid, port=int(announced["port"]), message="")
            log.info("chat model %s ready in its own process (pid %d, CPU variant %s, loaded in %.1f s)",
                     self.model_id, child.pid, announced.get("variant"), announced.get("load_seconds", 0))
            threading.Thread(target=_drain, args=(child.stdout,), daemon=True).start()
        while child.poll() is None and not self._closing.is_set():
            self._closing.wait(0.2)
        self._stop_child()
        code = child.returncode
        if self._closing.is_set():
            return {}
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            why = f"its process died of {name}" + (f" on CPU variant {variant}" if variant else "")
            log.error("chat model %s: %s", self.model_id, why)
            self._status.message = why
            return {"signal": -code}
        if not announced.get("ready"):
            return {"error": announced.get("error") or f"its process exited with {code} while loading"}
        self._status.message = f"its process exited with {code}"
        return {}

    def _stop_child(self) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    # -- the state file ------------------------------------------------------------------

    def _publish(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self._status, key, value)
        partial = self._state_path.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self._status), out)
        os.replace(partial, self._state_path)

    def _read_state(self) -> ModelStatus | None:
        try:
            return ModelStatus(**json.loads(self._state_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def proven_variant(model_path: Path, timeout: float = LOAD_TIMEOUT) -> str:
    """The CPU variant this machine serves `model_path` with, found as the supervisor finds it (a
    variant that traps is replaced and remembered): for llama.cpp's own server and benchmarks."""
    with tempfile.TemporaryDirectory(prefix="stackrag-variant-") as run_dir:
        process = ModelProcess("variant-check", lambda: model_path, 2048, os.cpu_count() or 2, Path(run_dir))
        try:
            status = process.wait_ready(timeout)
        finally:
            process.close()
    if status.state != "ready":
        raise Unavailable(process.unavailable_message(status))
    return status.variant


def faults_file() -> Path:
    """Variants that died of SIGILL, by CPU signature (model, features, kernel): a fact of the machine,
    kept for every data dir, so that no later start tries them again."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "stackrag" / "cpu-variant-faults.json"


def known_faults() -> set[str]:
    try:
        return set(json.loads(faults_file().read_text()).get(cpu_variants.signature(), []))
    except (OSError, ValueError, AttributeError):
        return set()


def _first_line(stream: IO[str] | None, timeout: float) -> str | None:
    """The model process's first line (ready or error); "" when it ended without one, None when it
    said nothing for `timeout` seconds."""
    if stream is None:
        return ""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return found[0] if found else None


def _parse(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _drain(stream: IO[str] | None) -> None:
    """Keep reading the model's stdout, so that a chatty library can never fill the pipe and block it."""
    if stream is None:
        return
    for line in stream:
        if line.strip():
            log.info("chat model: %s", line.rstrip()[:500])
