"""Shared fixtures: real stackrag servers (subprocesses on free ports) over real Milvus, and the
tutorial documents served over http from 127.0.0.1.

One server per Milvus mode per session: `inline` (the embedded Milvus engine, a child of the server,
in a temp dir) and `remote` (the same C++ engine serving gRPC on a loopback port, started by the
tests: a Milvus server with BM25). Tests that take `stack` run in both modes.
"""

from __future__ import annotations

import functools
import http.server as http_server
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from milvus_servers import free_port, lite_server

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STACKRAG_SHARED", ROOT.parent / "shared")).resolve()
TUTORIAL_DOCS = SHARED / "corpus" / "torchtune"
TUTORIAL_FILES = ["chat.rst", "llama3.rst", "memory_optimizations.rst", "lora_finetune.rst"]


@dataclass
class Server:
    url: str
    port: int
    data_dir: Path
    config_path: Path
    process: subprocess.Popen
    log_path: Path
    mode: str = "inline"  # which Milvus: inline (the embedded engine) or remote (a Milvus server)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120.0, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def write_config(path: Path, vector_io: str) -> Path:
    """A server for retrieval tests: its chat model process starts only if a test chats."""
    path.write_text(
        "version: 2\n"
        "providers:\n"
        "  inference:\n"
        "  - provider_id: llama-cpp\n"
        "    provider_type: inline::llama-cpp\n"
        "    config: {preload: false}\n"
        "  vector_io:\n" + vector_io + "models:\n"
        "- model_id: all-MiniLM-L6-v2\n"
        "  provider_id: sentence-transformers\n"
        "  model_type: embedding\n"
        "  metadata: {embedding_dimension: 384}\n"
    )
    return path


def inline_vector_io(db_path: str = "milvus.db") -> str:
    return (
        "  - provider_id: milvus\n"
        "    provider_type: inline::milvus\n"
        f"    config: {{db_path: {db_path}}}\n"
    )


def remote_vector_io(uri: str) -> str:
    return (
        "  - provider_id: milvus\n"
        "    provider_type: remote::milvus\n"
        f"    config: {{uri: '{uri}', token: 'root:Milvus'}}\n"
    )


def start_server(data_dir: Path, config_path: Path | None, env: dict[str, str] | None = None,
                 port: int | None = None, wait: float = 90.0, args: list[str] | None = None) -> Server:
    """`stackrag run` on a free port (plus `args`, e.g. --demo), once /v1/health answers."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"server-{port}.log"
    cmd = [sys.executable, "-m", "stackrag.cli", "run", "--port", str(port), "--data-dir", str(data_dir),
           *(args or [])]
    if config_path is not None:
        cmd += ["--config", str(config_path)]
    full_env = {**os.environ, "STACKRAG_ALLOW_PRIVATE_URLS": "1", **(env or {})}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=str(ROOT))
    server = Server(f"http://127.0.0.1:{port}", port, data_dir, config_path or Path(), process, log_path)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"stackrag exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/v1/health", timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"stackrag did not become healthy in {wait} s:\n{server.log_tail()}")


def worker_pids(server_pid: int) -> list[int]:
    """The model processes among the server's descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [server_pid]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            todo.append(child)
            try:
                cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes()
            except OSError:
                continue
            if b"llama_worker" in cmdline:
                found.append(child)
    return found


class _QuietHandler(http_server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


@pytest.fixture(scope="session")
def docs_url() -> Iterator[str]:
    """The four tutorial documents over http on 127.0.0.1, as the tutorial fetches them."""
    handler = functools.partial(_QuietHandler, directory=str(TUTORIAL_DOCS))
    httpd = http_server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="session")
def lite_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with lite_server(tmp_path_factory.mktemp("milvus-lite-server")) as uri:
        yield uri


_servers: dict[str, Server] = {}


@pytest.fixture(scope="session", params=["inline", "remote"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A running stackrag; the same tests run against the embedded engine and a Milvus server."""
    mode = request.param
    data_dir = tmp_path_factory.mktemp(f"stackrag-{mode}")
    if mode == "inline":
        config = write_config(data_dir / "run.yaml", inline_vector_io())
    else:
        uri = request.getfixturevalue("lite_uri")
        config = write_config(data_dir / "run.yaml", remote_vector_io(uri))
    server = start_server(data_dir, config)
    server.mode = mode
    yield server
    server.stop()


@pytest.fixture
def http(stack: Server) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.exit(f"the shared folder is missing at {SHARED} (set STACKRAG_SHARED)", returncode=2)
    return SHARED


def tutorial_documents(docs_url: str) -> list[dict]:
    """The tutorial's four documents, as its client program builds them."""
    return [
        {"document_id": f"num-{i}", "content": f"{docs_url}/{name}", "mime_type": "text/plain", "metadata": {}}
        for i, name in enumerate(TUTORIAL_FILES)
    ]


def register_tutorial_db(url: str, docs_url: str, chunk_size: int) -> str:
    """A new vector DB holding the tutorial's documents, registered and inserted as the tutorial does."""
    from llama_stack_client import LlamaStackClient

    client = LlamaStackClient(base_url=url)
    db = f"test-vector-db-{new_id()}"
    registered = client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2",
                                            embedding_dimension=384, provider_id="milvus")
    assert registered.identifier == db
    client.tool_runtime.rag_tool.insert(documents=tutorial_documents(docs_url), vector_db_id=db,
                                        chunk_size_in_tokens=chunk_size)
    return db


def new_id(prefix: str = "db") -> str:
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def tmp_copy(tmp_path: Path):
    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copy(src, dst)
        return dst

    return copy


@pytest.fixture
def exit_stack() -> Iterator[ExitStack]:
    with ExitStack() as es:
        yield es


MODELS_DIR_ENV = "STACKRAG_TEST_MODELS_DIR"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One joined copy of the packaged GGUF for every server of the session."""
    configured = os.environ.get(MODELS_DIR_ENV)
    return Path(configured) if configured else tmp_path_factory.mktemp("models")


EXAMPLE_CONFIG = ROOT / "examples" / "tutorial-offline.yaml"


def start_example_server(data_dir: Path, models_dir: Path, args: list[str] | None = None) -> Server:
    """A server on the shipped examples/tutorial-offline.yaml (the tutorial's model id -> local model)."""
    return start_server(data_dir, EXAMPLE_CONFIG, env={"STACKRAG_MODELS_DIR": str(models_dir)}, args=args)


@pytest.fixture(scope="session")
def agent_stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    """A server with the local chat model, run on the shipped examples/tutorial-offline.yaml."""
    data_dir = tmp_path_factory.mktemp("stackrag-agents")
    server = start_example_server(data_dir, models_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def oai(agent_stack: Server) -> Any:
    """The openai SDK on the agent server."""
    from openai import OpenAI

    return OpenAI(base_url=f"{agent_stack.url}/v1", api_key="unused")


CLIENT07_VENV = ROOT / ".venv-client07"


@pytest.fixture(scope="session")
def client07_python() -> Path:
    """llama-stack-client 0.7.x in its own Python 3.12 venv (made by `make dev`)."""
    python = CLIENT07_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: `make dev` creates it (Python 3.12 + llama-stack-client 0.7.x)")
    return python
