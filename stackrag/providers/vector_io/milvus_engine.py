"""The embedded Milvus: the C++ engine of milvus-lite 2.5.1 (Milvus's own segcore and knowhere, the
BM25 function and rankers of a Milvus cluster) as a child process of stackrag on a unix socket.

milvus-lite 2.5.1 shares its distribution name with milvus-lite 3 (the pure-Python engine pymilvus
uses for local paths, kept here to read old data: milvus_migration.py), so it is installed into a
folder of its own (`make install`: `pip install --no-deps --target <venv>/milvus-engine`). Its Python
wrapper is never imported (it needs pkg_resources); the executable is found through the
distribution's file list and checked against the sha256 pinned below.

The engine runs as its wrapper starts it: `milvus DB unix:SOCKET LOG_LEVEL LOCK` with
LD_LIBRARY_PATH at its lib/. It keeps all data in one SQLite file (DB) and lives only while its
parent holds a POSIX lock on LOCK: when stackrag exits, however it exits, the kernel drops the lock
and the engine stops by itself. The same lock keeps a second stackrag off the same db_path.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import StackError, Unavailable
from .milvus_migration import set_aside

log = logging.getLogger(__name__)

ENGINE_DISTRIBUTION = "milvus-lite"
ENGINE_VERSION = "2.5.1"
ENGINE_DIR_ENV = "STACKRAG_MILVUS_ENGINE_DIR"
EXECUTABLE = "milvus_lite/lib/milvus"
# The engine's executable and its index library, by machine (from the wheels' RECORD files; the
# x86_64 pair also checked against the files installed here). The other libraries in lib/ (openblas,
# gomp, glog, ...) are checked against the distribution's RECORD by size only: hashing them too would
# add ~0.3 s to every start.
PINNED_SHA256 = {
    "x86_64": {
        "milvus_lite/lib/milvus": "c4a8146db6c19d050f1bdedca82e8bf956d03fd20e78aedb9cd9bc91f65ceb94",
        "milvus_lite/lib/libknowhere.so": "d450a6b40d8eda1731524d3def2300f7c5561b4ed0a307f0b0aea3d1af454862",
    },
    "aarch64": {
        "milvus_lite/lib/milvus": "90200dafc964970dd5a4e72ffe0844044b3e102b67b0ab5298d9b7e897ad47bf",
        "milvus_lite/lib/libknowhere.so": "7cbe0b5fe93c7cc5e3674313310e6dd486badcd8db887f19f1239b92b64aef8a",
    },
}
READY_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 10.0
RESTART_DELAYS = (0.2, 1.0, 2.0, 5.0, 10.0, 30.0)
# An engine that served this long before it died is restarted without waiting.
STABLE_SECONDS = 60.0
# sun_path holds 108 bytes; a longer socket path goes to a private temp folder instead.
MAX_SOCKET_PATH = 100
LOG_TAIL_BYTES = 4_000
# The engine's log is started afresh at a start once it has grown past this.
MAX_LOG_BYTES = 10 * 1024 * 1024
# An engine whose stackrag was killed takes the lock as it goes (it waits on it), then exits: a new
# stackrag waits this long for it rather than calling the path taken.
ORPHAN_EXIT_SECONDS = 15.0

# db_paths whose engine this process runs: POSIX locks belong to the process, so a second lock on
# the same file from this process would succeed; this set refuses it instead.
_HELD: set[str] = set()
_HELD_LOCK = threading.Lock()


def _alive(pid: str) -> bool:
    """Whether the process `pid` (as written in the lock file) exists."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EngineError(StackError):
    """The engine cannot be used: not installed, not the pinned build, or its db_path is taken."""

    status_code = 503


def install_hint(directory: Path) -> str:
    return (f"`make install`, or: pip install --no-deps --target {directory} "
            f"{ENGINE_DISTRIBUTION}=={ENGINE_VERSION}")


def engine_dir() -> Path:
    """Where the engine's distribution is installed: $STACKRAG_MILVUS_ENGINE_DIR, else
    <sys.prefix>/milvus-engine (the venv's, as the Makefile installs it)."""
    configured = os.environ.get(ENGINE_DIR_ENV)
    return Path(configured).expanduser() if configured else Path(sys.prefix) / "milvus-engine"


@dataclass(frozen=True)
class EngineFiles:
    executable: Path
    lib_dir: Path
    version: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


_verified: dict[Path, EngineFiles] = {}


def locate_engine(directory: Path | None = None) -> EngineFiles:
    """The engine's files in `directory` (default engine_dir()), checked against the pinned sha256
    (once per process)."""
    directory = (directory or engine_dir()).resolve()
    if directory in _verified:
        return _verified[directory]
    dists = [d for d in importlib.metadata.distributions(path=[str(directory)])
             if (d.metadata["Name"] or "").lower().replace("_", "-") == ENGINE_DISTRIBUTION]
    if not dists:
        raise EngineError(f"the embedded Milvus engine ({ENGINE_DISTRIBUTION} {ENGINE_VERSION}) is not installed "
                          f"in {directory}; install it with {install_hint(directory)}")
    dist = dists[0]
    if dist.version != ENGINE_VERSION:
        raise EngineError(f"{directory} holds {ENGINE_DISTRIBUTION} {dist.version}, not {ENGINE_VERSION} "
                          f"(the engine stackrag pins); reinstall it with {install_hint(directory)}")
    machine = platform.machine().lower()
    pinned = PINNED_SHA256.get({"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine))
    if pinned is None or not sys.platform.startswith("linux"):
        raise EngineError(f"the embedded Milvus engine is pinned for Linux on x86_64 and aarch64, not "
                          f"{sys.platform} on {machine}: use remote::milvus with a Milvus server")
    files = {str(f): f for f in dist.files or []}
    for name, digest in pinned.items():
        if name not in files:
            raise EngineError(f"{name} is missing from {ENGINE_DISTRIBUTION} in {directory}; reinstall: "
                              f"{install_hint(directory)}")
        path = Path(dist.locate_file(files[name]))
        if not path.is_file() or _sha256(path) != digest:
            raise EngineError(f"{path} is not the pinned build of the Milvus engine (sha256 differs); reinstall: "
                              f"{install_hint(directory)}")
    for name, f in files.items():
        if name.startswith("milvus_lite/lib/") and name not in pinned and f.size is not None:
            path = Path(dist.locate_file(f))
            if not path.is_file() or path.stat().st_size != f.size:
                raise EngineError(f"{path} is missing or damaged; reinstall: {install_hint(directory)}")
    executable = Path(dist.locate_file(files[EXECUTABLE]))
    if not os.access(executable, os.X_OK):
        executable.chmod(executable.stat().st_mode | 0o111)
    found = EngineFiles(executable, executable.parent, dist.version)
    _verified[directory] = found
    return found


def engine_environment(files: EngineFiles) -> dict[str, str]:
    """The environment the engine runs in: its lib/ first on LD_LIBRARY_PATH, as its wrapper sets it."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")}
    env["LD_LIBRARY_PATH"] = str(files.lib_dir) + (
        ":" + os.environ["LD_LIBRARY_PATH"] if os.environ.get("LD_LIBRARY_PATH") else "")
    # glog would write a file into /tmp at every start; its lines go to the engine's log instead.
    env["GLOG_logtostderr"] = "1"
    return env


class EngineProcess:
    """One engine on `db_path`, started, watched and restarted by this process.

    start() takes the lock (or fails with EngineError when another process holds it), starts the
    engine and waits until it answers. If the engine dies, a watcher thread starts it again with
    growing delays; meanwhile check() raises Unavailable (503) saying so. `generation` counts
    starts, so a client knows its connection and loaded collections belong to an earlier engine.
    """

    def __init__(self, db_path: Path, files: EngineFiles | None = None, log_level: str = "ERROR"):
        self.db_path = db_path.resolve()
        self.files = files or locate_engine()
        self.log_level = log_level
        self.lock_path = self.db_path.with_name(f".{self.db_path.name}.lock")
        self.log_path = self.db_path.with_name(f".{self.db_path.name}.engine.log")
        self.socket_path = self._socket_path()
        self.generation = 0
        self._lock_file = None
        self._process: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._closing = False
        self._exit_note = ""
        self._watcher: threading.Thread | None = None
        # A Milvus Lite 3 store found at db_path, set aside to be copied in (milvus_migration.py).
        self.migration_source: Path | None = None

    @property
    def uri(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def location(self) -> str:
        return str(self.db_path)

    def describe(self, version: str) -> str:
        """What health reports (the engine does not implement GetVersion: its package tells)."""
        return f"{self.files.version} (embedded C++ engine, pid {self.pid})"

    def _socket_path(self) -> Path:
        path = self.db_path.with_name(f".{self.db_path.name}.sock")
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        return Path(tempfile.mkdtemp(prefix="stackrag-milvus-")) / "engine.sock"  # mkdtemp: mode 0700

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        self._take_lock()
        try:
            self.migration_source = set_aside(self.db_path)
            self._spawn()
            self._wait_ready(timeout)
        except BaseException:
            self._stop_process()
            self._release_lock()
            raise
        self._ready.set()
        self._watcher = threading.Thread(target=self._watch, name=f"milvus-engine-{self.db_path.name}", daemon=True)
        self._watcher.start()

    def _take_lock(self) -> None:
        key = str(self.db_path)
        with _HELD_LOCK:
            if key in _HELD:
                raise EngineError(f"{self.db_path} is already open in this process: give each inline::milvus "
                                  "provider a db_path of its own")
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.lock_path, "a+")
            deadline = time.monotonic() + ORPHAN_EXIT_SECONDS
            while True:
                try:
                    fcntl.lockf(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    lock_file.seek(0)
                    holder = lock_file.read().strip()
                    if _alive(holder) or time.monotonic() > deadline:
                        lock_file.close()
                        raise EngineError(
                            f"{self.db_path} is in use by another process{f' (pid {holder})' if holder else ''}: "
                            "one stackrag per db_path. Stop that server, or give this one another --data-dir or "
                            "db_path (several replicas share a Milvus server through remote::milvus)") from None
                    time.sleep(0.05)  # the engine of a stackrag that died, on its way out
            lock_file.truncate(0)
            lock_file.write(f"{os.getpid()}\n")
            lock_file.flush()
            self._lock_file = lock_file
            _HELD.add(key)

    def _release_lock(self) -> None:
        # The lock file stays: removing it would let two processes lock two different files.
        with _HELD_LOCK:
            if self._lock_file is not None:
                fcntl.lockf(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None
                _HELD.discard(str(self.db_path))

    def _spawn(self) -> None:
        self.socket_path.unlink(missing_ok=True)  # left by an engine that was killed
        env = engine_environment(self.files)
        cmd = [str(self.files.executable), str(self.db_path), self.uri, self.log_level, str(self.lock_path)]
        if self.log_path.exists() and self.log_path.stat().st_size > MAX_LOG_BYTES:
            self.log_path.unlink()
        with open(self.log_path, "ab") as log_file:
            # A session of its own: a Ctrl-C meant for stackrag reaches stackrag, which then stops it.
            self._process = subprocess.Popen(cmd, env=env, cwd=str(self.db_path.parent), stdin=subprocess.DEVNULL,
                                             stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self.generation += 1

    def _wait_ready(self, timeout: float) -> None:
        """Until the engine answers on its socket (it opens the socket before it has read its data)."""
        from pymilvus import MilvusClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        process = self._process
        while time.monotonic() < deadline and not self._closing:
            if process.poll() is not None:
                raise EngineError(f"the Milvus engine for {self.db_path} exited with {process.returncode} at "
                                  f"start:\n{self.log_tail()}")
            if self.socket_path.exists():
                try:
                    client = MilvusClient(uri=self.uri, timeout=5)
                    try:
                        client.list_collections()
                    finally:
                        client.close()
                    self.socket_path.chmod(0o600)
                    return
                except Exception as exc:  # not serving yet: any error from pymilvus
                    last = exc
            time.sleep(0.05)
        raise EngineError(f"the Milvus engine for {self.db_path} did not answer within {timeout:.0f} s ({last})"
                          f":\n{self.log_tail()}")

    def _watch(self) -> None:
        attempt = 0
        up_since = time.monotonic()
        while True:
            process = self._process
            code = process.wait()
            if self._closing:
                return
            self._ready.clear()
            self._exit_note = f"exited with {code}"
            if time.monotonic() - up_since > STABLE_SECONDS:
                attempt = 0  # a crash after a long run is not a crash loop: restart at once
            log.error("the embedded Milvus engine for %s (pid %d) exited with %s; restarting it. Its log ends:\n%s",
                      self.db_path, process.pid, code, self.log_tail())
            while not self._closing:
                time.sleep(RESTART_DELAYS[min(attempt, len(RESTART_DELAYS) - 1)])
                attempt += 1
                if self._closing:
                    return
                try:
                    started = time.monotonic()
                    self._spawn()
                    self._wait_ready(READY_TIMEOUT_SECONDS)
                except EngineError as exc:
                    log.error("restarting the Milvus engine failed: %s", exc.message)
                    self._stop_process()
                    continue
                log.warning("the embedded Milvus engine for %s is back (pid %d, %.1f s)", self.db_path,
                            self._process.pid, time.monotonic() - started)
                up_since = time.monotonic()
                self._ready.set()
                break

    def check(self) -> None:
        """Raise Unavailable while the engine is down (restarting)."""
        if not self._ready.is_set():
            raise Unavailable(f"the embedded Milvus engine for {self.db_path} {self._exit_note or 'is not running'} "
                              "and is being restarted; retry in a few seconds")

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _stop_process(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the engine: released, the lock tells it to exit; a terminate follows if it does not."""
        self._closing = True
        self._ready.clear()
        self._exit_note = "was stopped"
        process = self._process
        self._release_lock()
        if process is not None:
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._stop_process()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=STOP_TIMEOUT_SECONDS)
        self.socket_path.unlink(missing_ok=True)
