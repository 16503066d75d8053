"""A throwaway PostgreSQL server for the tests and benchmarks: initdb into a temp dir, started on
127.0.0.1 on a free port, removed afterwards. PostgreSQL refuses to run as root, so as root the
server runs as the `postgres` system user (the Debian package creates it).

Binaries: $PG_BIN, else the newest /usr/lib/postgresql/*/bin (Debian's `postgresql`; the Makefile's
postgres-server target installs it), else PATH.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from milvus_servers import free_port

USER = "stackrag"
PASSWORD = "stackrag-test-password"


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    data_dir: Path
    pid: int = 0  # the postmaster (connections are its child processes)

    def connect(self, db: str = "postgres"):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password, dbname=db,
                               autocommit=True)

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def metadata_store_yaml(self, db: str) -> str:
        """The run.yaml block that points stackrag at database `db` of this server."""
        return (f"metadata_store:\n  type: postgres\n  host: {self.host}\n  port: {self.port}\n  db: {db}\n"
                f"  user: {self.user}\n  password: {self.password}\n")


def bin_dir() -> Path:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server binaries not found: `make postgres-server` installs Debian's postgresql")


def _as_server_user() -> dict:
    """Popen arguments that drop root to the postgres user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root, but there is no `postgres` user to run PostgreSQL as") from exc
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = bin_dir()
    as_user = _as_server_user()
    # Not under pytest's tmp_path: its parents are private to root, and the server user must reach it.
    root = Path(tempfile.mkdtemp(prefix="stackrag-pg-"))
    data_dir = root / "data"
    pwfile = root / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        for path in (root, pwfile):
            os.chown(path, as_user["user"], as_user["group"])
    port = free_port()
    log_path = root / "postgres.log"
    process: subprocess.Popen | None = None
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(data_dir), "-U", USER, f"--pwfile={pwfile}",
                        "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"],
                       check=True, capture_output=True, cwd=root, **as_user)
        # Durability is not what the tests measure: fsync off keeps the server fast on a busy machine.
        cmd = [str(bindir / "postgres"), "-D", str(data_dir), "-h", "127.0.0.1", "-p", str(port), "-k", "",
               "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
               "-c", "max_connections=200"]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
                                       **as_user)
        server = PostgresServer("127.0.0.1", port, USER, PASSWORD, data_dir, process.pid)
        _wait(server, process, log_path)
        yield server
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(root, ignore_errors=True)


def _wait(server: PostgresServer, process: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            server.connect().close()
            return
        except Exception:  # not accepting connections yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM waits for every client to leave).
    try:
        os.kill(process.pid, signal.SIGINT)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
