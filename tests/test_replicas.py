"""Several stackrag replicas behind one load balancer: one PostgreSQL (a real server, initdb'd into
a temp dir) and one Milvus server (`milvus-lite server`), two processes on two ports with the same
config and nothing else in common. What one replica writes, the other serves; background
ingestion is run by exactly one replica, and taken over when that replica is killed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import ROOT, SHARED, Server, new_id, remote_vector_io, start_server, worker_pids
from postgres_server import PostgresServer, postgres_server

pytestmark = pytest.mark.slow

CORPUS = SHARED / "corpus" / "torchtune-docs"
# Long enough (seconds of embedding each) for a replica to be killed in the middle of one.
INGEST_FILES = ["tutorials/memory_optimizations.rst", "tune_cli.rst", "api_ref_models.rst"]
LEASE_SECONDS = 4
FACTS = [
    "The lighthouse keeper lights the lamp at dusk every evening.",
    "Fog horns sound when the mist rolls in from the sea.",
    "Hedgehogs eat beetles, worms and slugs in the garden at night.",
    "Koalas sleep up to twenty hours a day in eucalyptus trees.",
    "The ferry to the island leaves the harbour at seven in the morning.",
    "Sourdough bread rises slowly because of wild yeast and lactic bacteria.",
]


# -- a chat model stand-in: an OpenAI-compatible server that says how much history it was sent ----


class FakeChat(BaseHTTPRequestHandler):
    requests: list[list[dict[str, Any]]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        FakeChat.requests.append(body["messages"])
        text = f"I was sent {len(body['messages'])} messages."
        events = [{"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def fake_chat_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


# -- the cluster -----------------------------------------------------------------------------------


@dataclass
class Cluster:
    pg: PostgresServer
    db: str
    config: Path
    milvus_uri: str
    a: Server
    b: Server

    def start_replica(self, data_dir: Path, args: list[str] | None = None) -> Server:
        return start_server(data_dir, self.config, args=args)

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with self.pg.connect(self.db) as conn:
            return conn.execute(query, params).fetchall()

    def records(self, namespace: str) -> list[dict[str, Any]]:
        return [json.loads(v) for (v,) in self.sql(
            "SELECT value FROM stackrag_records WHERE namespace = %s", (namespace,))]


def write_replica_config(path: Path, pg: PostgresServer, db: str, milvus_uri: str, chat_url: str,
                         models_dir: Path) -> Path:
    path.write_text(
        "version: 2\n"
        "providers:\n"
        "  inference:\n"
        "  - provider_id: fake\n"
        "    provider_type: remote::openai\n"
        f"    config: {{url: '{chat_url}', api_key: sk-test}}\n"
        "  - provider_id: llama-cpp\n"
        "    provider_type: inline::llama-cpp\n"
        f"    config: {{preload: false, models_dir: '{models_dir}'}}\n"
        "  vector_io:\n" + remote_vector_io(milvus_uri) +
        "models:\n"
        "- {model_id: fake-chat, provider_id: fake, model_type: llm}\n"
        "- model_id: all-MiniLM-L6-v2\n"
        "  provider_id: sentence-transformers\n"
        "  model_type: embedding\n"
        "  metadata: {embedding_dimension: 384}\n"
        + pg.metadata_store_yaml(db) +
        f"jobs: {{lease_seconds: {LEASE_SECONDS}}}\n"
        # Attaches answer at once: these tests kill a replica while its jobs run.
        "ingestion: {attach_wait_seconds: 0}\n"
    )
    return path


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(pg, lite_uri, fake_chat_url, models_dir, tmp_path_factory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replicas")
    db = pg.create_database("replicas")
    config = write_replica_config(root / "run.yaml", pg, db, lite_uri, fake_chat_url, models_dir)
    # Started at once: both migrate the empty database at the same moment.
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda name: start_server(root / name, config), ["a", "b"])
    cluster = Cluster(pg, db, config, lite_uri, a, b)
    yield cluster
    a.stop()
    b.stop()


def wait_for(condition, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- the stores underneath, unit-ish ---------------------------------------------------------------

MIGRATE = """
import sys, time
from stackrag.storage.postgres import PostgresDatabase
host, port, db, user, password, start_at = sys.argv[1:]
time.sleep(max(0.0, float(start_at) - time.time()))
database = PostgresDatabase(host, int(port), db, user, password)
print(database.schema_version())
"""


def test_postgres_stores_and_concurrent_migrations(pg):
    from stackrag.config import FetchSettings, IngestionSettings
    from stackrag.services.ingestion import INGESTS, Ingestion
    from stackrag.storage.postgres import (MIGRATIONS, PostgresBlobStore, PostgresDatabase, PostgresJobQueue,
                                           PostgresRegistry)

    db = pg.create_database(new_id("unit").replace("-", "_"))
    start_at = str(time.time() + 2.0)  # both processes migrate the empty database at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE, pg.host, str(pg.port), db, pg.user, pg.password,
                               start_at], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip() == str(len(MIGRATIONS))

    database = PostgresDatabase(pg.host, pg.port, db, pg.user, pg.password)
    try:
        registry = PostgresRegistry(database)
        registry.put("things", "b", {"name": "second", "z": 1, "a": 2})
        registry.put("things", "a", {"name": "first"})
        registry.put("things", "b", {"name": "second, changed", "z": 1, "a": 2})
        assert registry.get("things", "b") == {"name": "second, changed", "z": 1, "a": 2}
        assert list(registry.get("things", "b")) == ["name", "z", "a"]  # key order kept
        assert [r["name"] for r in registry.list("things")] == ["second, changed", "first"]  # creation order
        assert registry.get("things", "missing") is None
        assert registry.delete("things", "a") and not registry.delete("things", "a")
        assert registry.list("other") == []

        blobs = PostgresBlobStore(database)
        blobs.put("file-1", b"\x00\xffbytes")
        assert blobs.get("file-1") == b"\x00\xffbytes"
        blobs.delete("file-1")
        with pytest.raises(KeyError):
            blobs.get("file-1")

        jobs = PostgresJobQueue(database)
        jobs.enqueue("k", "one", {"n": 1})
        jobs.enqueue("k", "two", {"n": 2})
        first, second = jobs.claim("r1", 1.0), jobs.claim("r2", 1.0)
        assert {first.key, second.key} == {"one", "two"} and jobs.claim("r3", 1.0) is None
        assert jobs.renew(first, "r1", 30.0) and not jobs.renew(first, "r2", 30.0)
        time.sleep(1.2)  # r2 stops renewing: its lease runs out and r3 takes the job over
        taken = wait_for(lambda: jobs.claim("r3", 30.0), 5, "a lapsed lease")
        assert taken.key == second.key and taken.attempts == 2
        assert not jobs.finish(second, "r2") and jobs.finish(taken, "r3")
        jobs.release(first, "r1")  # handed back unfinished: claimable at once
        held = jobs.claim("r4", 30.0)
        assert held.key == "one"
        # Queued again while r4 runs it: the new job waits until r4's run has stopped.
        jobs.enqueue("k", "one", {"n": 3})
        jobs.enqueue("k", "one", {"n": 9}, replace=False)  # start-up's re-queue keeps an existing job
        assert jobs.claim("r5", 30.0) is None
        assert not jobs.renew(held, "r4", 30.0)  # superseded: r4 is told to stop, and keeps the key...
        assert jobs.claim("r5", 30.0) is None    # ...until its write is over
        assert not jobs.finish(held, "r4")       # superseded work is not done, but the key is free now
        again = jobs.claim("r5", 30.0)
        assert again.key == "one" and again.payload == {"n": 3} and again.job_id != held.job_id

        # Unfinished writes: those of a live replica are left alone, a dead one's are rolled back.
        class Index:
            def __init__(self) -> None:
                self.removed: list[str] = []

            def delete_ingest(self, name: str, ingest_id: str) -> int:
                self.removed.append(ingest_id)
                return 3

        for ingest_id, owner in (("w-live", "live"), ("w-dead", "dead"), ("w-old", None)):
            registry.put(INGESTS, ingest_id, {"ingest_id": ingest_id, "provider_id": "m", "collection": "c",
                                              "owner": owner})
        index = Index()
        Ingestion(FetchSettings(), IngestionSettings(), registry, "me").recover({"m": index}, lambda o: o == "live")
        assert sorted(index.removed) == ["w-dead", "w-old"]
        assert [e["ingest_id"] for e in registry.list(INGESTS)] == ["w-live"]
    finally:
        database.close()


# -- two replicas ----------------------------------------------------------------------------------


def test_register_on_one_insert_on_the_other_query_both(cluster):
    db = new_id("shared")
    with cluster.a.client() as a, cluster.b.client() as b:
        registered = a.post("/v1/vector-dbs", json={"vector_db_id": db, "embedding_model": "all-MiniLM-L6-v2"})
        assert registered.status_code == 200
        assert db in [d["identifier"] for d in b.get("/v1/vector-dbs").json()["data"]]
        chunks = [{"content": text, "metadata": {"document_id": f"fact-{i}"}} for i, text in enumerate(FACTS)]
        assert b.post("/v1/vector-io/insert", json={"vector_db_id": db, "chunks": chunks}).status_code == 200
        for question in ("who lights the lamp?", "what do hedgehogs eat?"):
            query = {"vector_db_id": db, "query": question, "params": {"max_chunks": 3}}
            results = [c.post("/v1/vector-io/query", json=query).json() for c in (a, b)]
            assert results[0] == results[1] and len(results[0]["chunks"]) == 3
            rag = {"vector_db_ids": [db], "content": question}
            answers = [c.post("/v1/tool-runtime/rag-tool/query", json=rag).json() for c in (a, b)]
            assert answers[0] == answers[1] and answers[0]["metadata"]["document_ids"]


def test_sixteen_writers_on_two_replicas_leave_one_whole_version(cluster):
    """One document, one version across replicas: the metadata store's lock orders writers of one
    (vector DB, document_id) wherever they run."""
    db = new_id("one-version")
    with cluster.a.client() as a:
        assert a.post("/v1/vector-dbs", json={"vector_db_id": db, "embedding_model": "all-MiniLM-L6-v2"}).status_code == 200
    versions = {n: " ".join(f"version{n} line {i} about the ferry timetable." for i in range(60)) for n in range(16)}

    def write(n: int) -> int:
        with (cluster.a if n % 2 else cluster.b).client() as client:
            return client.post("/v1/tool-runtime/rag-tool/insert", json={
                "vector_db_id": db, "documents": [{"document_id": "doc", "content": versions[n]}],
                "chunk_size_in_tokens": 64}).status_code

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(write, range(16))) == [200] * 16
    with cluster.a.client() as a:
        found = a.post("/v1/vector-io/query", json={"vector_db_id": db, "query": "ferry timetable",
                                                     "params": {"max_chunks": 1000, "mode": "keyword"}}).json()["chunks"]
    tags = {tag for c in found for tag in re.findall(r"version(\d+)", c["content"])}
    assert len(tags) == 1, tags
    alone = new_id("one-version")
    with cluster.b.client() as b:
        b.post("/v1/vector-dbs", json={"vector_db_id": alone, "embedding_model": "all-MiniLM-L6-v2"})
        b.post("/v1/tool-runtime/rag-tool/insert", json={"vector_db_id": alone, "chunk_size_in_tokens": 64,
               "documents": [{"document_id": "doc", "content": versions[int(next(iter(tags)))]}]})
        reference = b.post("/v1/vector-io/query", json={"vector_db_id": alone, "query": "ferry timetable",
                                                         "params": {"max_chunks": 1000, "mode": "keyword"}}).json()
    assert len(found) == len(reference["chunks"])


def test_agent_session_continues_on_the_other_replica(cluster):
    FakeChat.requests.clear()
    with cluster.a.client() as a, cluster.b.client() as b:
        # Without enable_session_persistence a session would live in one process; shared, it may not.
        agent = a.post("/v1/agents", json={"agent_config": {"model": "fake-chat", "instructions": "Be brief."}})
        agent_id = agent.json()["agent_id"]
        session_id = a.post(f"/v1/agents/{agent_id}/session", json={"session_name": "s"}).json()["session_id"]
        turn = {"messages": [{"role": "user", "content": "When does the ferry leave?"}], "stream": False}
        first = a.post(f"/v1/agents/{agent_id}/session/{session_id}/turn", json=turn).json()
        turn = {"messages": [{"role": "user", "content": "And when does it come back?"}], "stream": False}
        second = b.post(f"/v1/agents/{agent_id}/session/{session_id}/turn", json=turn).json()
        # B sent the model the instructions, the first turn (question and answer) and the new question.
        assert second["output_message"]["content"] == "I was sent 4 messages."
        assert FakeChat.requests[-1][1]["content"] == "When does the ferry leave?"
        assert FakeChat.requests[-1][2]["content"] == first["output_message"]["content"]
        for client in (a, b):
            session = client.get(f"/v1/agents/{agent_id}/session/{session_id}").json()
            assert [t["turn_id"] for t in session["turns"]] == [first["turn_id"], second["turn_id"]]


def upload(client: httpx.Client, name: str) -> str:
    data = (CORPUS / name).read_bytes()
    response = client.post("/v1/files", files={"file": (Path(name).name, data, "text/x-rst")},
                           data={"purpose": "assistants"})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def create_store(client: httpx.Client, file_ids: list[str]) -> str:
    response = client.post("/v1/vector_stores", json={"name": "docs", "file_ids": file_ids})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def all_completed(client: httpx.Client, store_id: str, count: int) -> list[dict] | None:
    files = client.get(f"/v1/vector_stores/{store_id}/files").json()["data"]
    assert not [f for f in files if f["status"] == "failed"], files
    done = [f for f in files if f["status"] == "completed"]
    return files if len(done) == count else None


def rows_by_file(cluster: Cluster, store_id: str) -> dict[str, list[tuple[str, int]]]:
    """(chunk_id, window) of every row in the store's collection, by file, read from Milvus directly."""
    from pymilvus import MilvusClient

    # Each registration gets a collection of its own: the registry names it.
    (value,), = cluster.sql("SELECT value FROM stackrag_records WHERE namespace = 'vector_dbs' AND key = %s",
                            (store_id,))
    client = MilvusClient(uri=cluster.milvus_uri, token="root:Milvus")
    try:
        rows = client.query(json.loads(value)["collection"], filter="", limit=16_384,
                            output_fields=["document_id", "chunk_id", "window"])
    finally:
        client.close()
    found: dict[str, list[tuple[str, int]]] = {}
    for row in rows:
        found.setdefault(row["document_id"], []).append((row["chunk_id"], row["window"]))
    return found


@pytest.fixture(scope="module")
def file_ids(cluster) -> list[str]:
    with cluster.a.client() as a:
        return [upload(a, name) for name in INGEST_FILES]


@pytest.fixture(scope="module")
def reference_store(cluster, file_ids) -> str:
    """The files attached on A and ingested by the replicas without interruption."""
    with cluster.a.client() as a:
        store_id = create_store(a, file_ids)
        wait_for(lambda: all_completed(a, store_id, len(file_ids)), 180, "the files to be ingested")
    return store_id


def test_vector_store_files_ingested_once_and_completed_everywhere(cluster, file_ids, reference_store):
    with cluster.a.client() as a, cluster.b.client() as b:
        # File contents live in PostgreSQL: B serves what was uploaded to A.
        assert b.get(f"/v1/files/{file_ids[0]}/content").content == (CORPUS / INGEST_FILES[0]).read_bytes()
        views = [c.get(f"/v1/vector_stores/{reference_store}").json() for c in (a, b)]
        assert views[0]["file_counts"] == views[1]["file_counts"] == {
            "completed": 3, "cancelled": 0, "failed": 0, "in_progress": 0, "total": 3}
        for file_id in file_ids:
            statuses = [c.get(f"/v1/vector_stores/{reference_store}/files/{file_id}").json()["status"] for c in (a, b)]
            assert statuses == ["completed", "completed"]
    # Each file was ingested by exactly one replica, once: one insert per file in the two logs together.
    logs = cluster.a.log_path.read_text() + cluster.b.log_path.read_text()
    assert logs.count(f") into {reference_store} in ") == len(file_ids)
    rows = rows_by_file(cluster, reference_store)
    assert sorted(rows) == sorted(file_ids)
    for pairs in rows.values():
        assert len(pairs) == len(set(pairs))  # no chunk window twice
    assert cluster.sql("SELECT count(*) FROM stackrag_jobs") == [(0,)]


def test_killed_replica_job_is_finished_by_another(cluster, file_ids, reference_store, tmp_path):
    victim = cluster.start_replica(tmp_path / "victim")
    try:
        with victim.client() as c:
            # Queued on the victim, which is told at once and claims two of the three jobs itself.
            store_id = create_store(c, file_ids)
        victim_id = wait_for(lambda: [p["replica_id"] for p in cluster.records("replicas")
                                      if p["pid"] == victim.process.pid], 10, "the victim's presence")[0]
        held = wait_for(lambda: cluster.sql("SELECT key FROM stackrag_jobs WHERE owner = %s", (victim_id,)),
                        10, "the victim to claim a job")
        victim.process.kill()  # kill -9: mid-ingestion, nothing gets handed back
        victim.process.wait()
    finally:
        victim.stop()
    assert all(key.startswith(f"{store_id}/") for (key,) in held)

    with cluster.a.client() as a, cluster.b.client() as b:
        wait_for(lambda: all_completed(b, store_id, len(file_ids)), 180, "the other replicas to finish the jobs")
        assert all_completed(a, store_id, len(file_ids))
    logs = cluster.a.log_path.read_text() + cluster.b.log_path.read_text()
    assert "taken over, attempt 2" in logs
    # Exactly the rows an uninterrupted ingestion made: nothing doubled, nothing missing.
    reference, rows = rows_by_file(cluster, reference_store), rows_by_file(cluster, store_id)
    assert {f: len(p) for f, p in rows.items()} == {f: len(p) for f, p in reference.items()}
    assert {f: sorted(p) for f, p in rows.items()} == {f: sorted(p) for f, p in reference.items()}
    # Whatever the victim left unfinished in the journal is rolled back by the live replicas.
    wait_for(lambda: not cluster.records("ingests"), 4 * LEASE_SECONDS, "the victim's journal entries to go")


def test_workers_share_one_port(cluster, tmp_path):
    before = {p["replica_id"] for p in cluster.records("replicas")}
    server = cluster.start_replica(tmp_path / "workers", args=["--workers", "2"])
    try:
        # Each worker process is a replica of its own.
        workers = wait_for(lambda: [p for p in cluster.records("replicas") if p["replica_id"] not in before]
                           if len(cluster.records("replicas")) >= len(before) + 2 else None, 60, "two worker replicas")
        assert len({p["pid"] for p in workers}) == 2 and server.process.pid not in {p["pid"] for p in workers}
        with server.client() as w, cluster.a.client() as a:
            for _ in range(4):
                assert w.get("/v1/vector-dbs").json() == a.get("/v1/vector-dbs").json()
        # One model process for both workers: whichever asks first starts it, the other uses it.
        for _ in range(6):  # a new connection each time, so that both workers answer some
            r = httpx.post(f"{server.url}/v1/inference/chat-completion", timeout=120, json={
                "model_id": "qwen2.5-coder-0.5b-instruct", "sampling_params": {"max_tokens": 4},
                "messages": [{"role": "user", "content": "Say hi."}]})
            assert r.status_code == 200, r.text
        assert len(worker_pids(server.process.pid)) == 1
    finally:
        server.stop()


@pytest.mark.parametrize("vector_io", ["inline", "remote"])
def test_workers_refused_on_stores_one_process_owns(vector_io, lite_uri, tmp_path):
    config = tmp_path / "run.yaml"
    if vector_io == "remote":
        config.write_text("providers:\n  vector_io:\n" + remote_vector_io(lite_uri))
    else:
        config.write_text("version: 2\n")
    done = subprocess.run([sys.executable, "-m", "stackrag.cli", "run", "--workers", "2", "--config", str(config),
                           "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert "--workers 2" in message and "metadata_store is sqlite" in message and "type: postgres" in message
    assert ("inline::milvus" in message) == (vector_io == "inline")
    assert not (tmp_path / "data").exists()  # refused before anything was created
