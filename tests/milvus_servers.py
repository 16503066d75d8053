"""Milvus server processes for the remote-mode tests, on 127.0.0.1 only.

- `lite_server`: the C++ Milvus engine of milvus-lite 2.5.1 (the one inline::milvus embeds,
  located and checked by stackrag's milvus_engine.py) serving gRPC on a loopback port: a real Milvus
  with BM25 full-text search, hybrid search and its rankers.
- `milvus23_server`: a real Milvus 2.3 standalone (PyPI `milvus`), which has no BM25; it listens on
  every interface, so it only starts inside a private network namespace (see tests/run_slow.sh).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_milvus(uri: str, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    from pymilvus import MilvusClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Milvus exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            client = MilvusClient(uri=uri, token="root:Milvus", timeout=2)
            client.list_collections()
            client.close()
            return
        except Exception as exc:  # not up yet: any connection error
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"Milvus at {uri} not ready after {timeout} s ({last}):\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(process: subprocess.Popen) -> None:
    """Stop a server and everything it started (Milvus 2.3's launcher leaves its `milvus` child behind
    when only the launcher is waited for)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.2)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@contextmanager
def lite_server(data_dir: Path, port: int | None = None) -> Iterator[str]:
    with lite_server_process(data_dir, port) as (uri, _):
        yield uri


@contextmanager
def lite_server_process(data_dir: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """lite_server, also giving its process (bench/scale.py measures its memory). Started as the
    engine's own wrapper starts it with an address: `milvus DB HOST:PORT LOG_LEVEL` (no lock file:
    it runs until it is stopped)."""
    from stackrag.providers.vector_io.milvus_engine import engine_environment, locate_engine

    files = locate_engine()
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "milvus-engine.log"
    cmd = [str(files.executable), str(data_dir / "milvus.db"), f"127.0.0.1:{port}", "ERROR"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=engine_environment(files), cwd=str(data_dir))
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_milvus(uri, process, log_path, timeout=60)
        yield uri, process
    finally:
        _stop(process)


def in_private_netns() -> bool:
    """True when loopback is the only network interface here (e.g. under `unshare -n`).

    /sys/class/net is not remounted by `unshare -n`, so ask the kernel through `ip` instead.
    """
    try:
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return names == ["lo"]


def milvus23_executable() -> Path | None:
    candidate = Path(os.environ.get("MILVUS23_VENV", BIN.parent.parent / ".venv-milvus23")) / "bin" / "milvus-server"
    return candidate if candidate.is_file() else None


@contextmanager
def milvus23_server(data_dir: Path) -> Iterator[str]:
    """A real Milvus 2.3 standalone on 127.0.0.1:19530. It binds every interface and cannot be told
    otherwise, so it refuses to start outside a private network namespace."""
    if not in_private_netns():
        raise RuntimeError("Milvus 2.3 listens on all interfaces: run this under `unshare -n` (tests/run_slow.sh)")
    exe = milvus23_executable()
    if exe is None:
        raise RuntimeError("milvus-server not found: tests/run_slow.sh installs it into .venv-milvus23")
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "milvus23.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([str(exe), "--data", str(data_dir)], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    uri = "http://127.0.0.1:19530"
    try:
        wait_for_milvus(uri, process, log_path, timeout=120)
        yield uri
    finally:
        _stop(process)
