"""What every benchmark script shares: machine facts, process RSS, a free port, a running server,
and the JSON result written to bench/results/ and printed."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def header() -> dict:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_total(pid: int, measure) -> float:
    """measure(p) summed over a process and its descendants (the milvus-lite launcher runs the server
    as a child; PostgreSQL serves each connection in a child process). Gone processes count 0."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += measure(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, config: Path | None = None, root: Path = ROOT,
                 env: dict[str, str] | None = None,
                 extra_args: list[str] | None = None) -> tuple[subprocess.Popen, str, float]:
    """`stackrag run` on a free port: (process, url, seconds until /v1/health answered). `root` runs
    another checkout's code (a reference commit), `env` adds to the environment, `extra_args` to the
    command line."""
    port = free_port()
    cmd = [sys.executable, "-m", "stackrag.cli", "run", "--port", str(port), "--data-dir", str(data_dir),
           "--log-level", "warning"]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += extra_args or []
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(root),
                            env={**os.environ, "PYTHONPATH": str(root), **(env or {})})
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return proc, url, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        time.sleep(0.05)


@contextmanager
def running_server(data_dir: Path, config: Path | None = None, stop_timeout: float = 30, root: Path = ROOT,
                   env: dict[str, str] | None = None, extra_args: list[str] | None = None):
    """start_server as a context: (process, url, start-up seconds), stopped on the way out."""
    proc, url, seconds = start_server(data_dir, config, root, env, extra_args)
    try:
        yield proc, url, seconds
    finally:
        proc.terminate()
        proc.wait(timeout=stop_timeout)


def write_result(result: dict, out: str | Path) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    path.write_text(text + "\n")
    print(text)
