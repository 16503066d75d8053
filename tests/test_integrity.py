"""Nothing lost, nobody in: the eleven holes a hostile pass found (issue 15), each as the user who
would hit it, on a real server (Milvus Lite and a Milvus server alike where the store matters).

1 a read-only key writing through a tool; 2 a decompression bomb; 3 two registrations sharing a
collection; 4 concurrent re-inserts of one document; 5 an insert outliving its vector DB's delete;
6 lone surrogates; 7 control characters in ids; 8 chunk_template format specs; 9 a chunk whose
metadata breaks later queries; 10 work that blocks the event loop; 11 malformed nested input.
"""

from __future__ import annotations

import gzip
import http.server as http_server
import json
import re
import statistics
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest

from conftest import Server, inline_vector_io, new_id, start_server

WRITE_KEY = "rw-" + "9a8b7c6d" * 4
READ_KEY = "ro-" + "5e4f3a2b" * 4


def register(http: httpx.Client, vector_db_id: str | None = None, **extra) -> str:
    vector_db_id = vector_db_id or new_id("integrity")
    r = http.post("/v1/vector-dbs", json={"vector_db_id": vector_db_id, "embedding_model": "all-MiniLM-L6-v2",
                                          **extra})
    assert r.status_code == 200, r.text
    return vector_db_id


def chunks_of(http: httpx.Client, vector_db_id: str, query: str = "text", n: int = 100) -> list[dict]:
    r = http.post("/v1/vector-io/query", json={"vector_db_id": vector_db_id, "query": query,
                                                "params": {"max_chunks": n, "mode": "keyword"}})
    assert r.status_code == 200, r.text
    return r.json()["chunks"]


def insert_doc(http: httpx.Client, vector_db_id: str, document_id: str, text: str, **extra) -> httpx.Response:
    return http.post("/v1/tool-runtime/rag-tool/insert", json={
        "vector_db_id": vector_db_id, "documents": [{"document_id": document_id, "content": text, **extra}],
        "chunk_size_in_tokens": 64})


class HealthWatch:
    """/v1/health every 20 ms from a thread of its own: its latencies while something else runs."""

    def __init__(self, url: str):
        self.url, self.latencies, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get("/v1/health").status_code == 200
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(0.02)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        while not self.latencies and self._thread.is_alive():  # watching before the work starts
            time.sleep(0.005)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98] if len(self.latencies) >= 20 else max(self.latencies)


# -- 1: a read-only key cannot write, through any route or tool --------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("integrity-keys")
    config = data_dir / "run.yaml"
    config.write_text("providers:\n  vector_io:\n" + inline_vector_io())
    server = start_server(data_dir, config, env={"STACKRAG_API_KEY": WRITE_KEY, "STACKRAG_READ_ONLY_API_KEY": READ_KEY})
    yield server
    server.stop()


def test_1_a_read_only_key_cannot_insert_through_a_tool(keyed):
    writer = keyed.client(headers={"Authorization": f"Bearer {WRITE_KEY}"})
    reader = keyed.client(headers={"Authorization": f"Bearer {READ_KEY}"})
    db = register(writer)
    assert insert_doc(writer, db, "v1", "The original text of the first document.").status_code == 200
    vandal = reader.post("/v1/tool-runtime/invoke", json={"tool_name": "insert_into_memory", "kwargs": {
        "vector_db_id": db, "documents": [{"document_id": "v1", "content": "VANDALISED"}]}})
    assert vandal.status_code == 403 and "insert_into_memory" in vandal.json()["detail"]
    search = reader.post("/v1/tool-runtime/invoke", json={"tool_name": "knowledge_search", "kwargs": {
        "vector_db_ids": [db], "query": "original text"}})
    assert search.status_code == 200 and "VANDALISED" not in search.text
    assert [c["content"] for c in chunks_of(writer, db, "original")] == ["The original text of the first document."]


# -- the shared server for the rest ------------------------------------------------------------


@pytest.fixture
def api(stack: Server) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


def test_3_an_alias_never_shares_its_owner_s_collection(api):
    owner = register(api)
    assert insert_doc(api, owner, "kept", "The owner's data must survive the alias.").status_code == 200
    alias = register(api, provider_vector_db_id=owner)
    assert api.delete(f"/v1/vector-dbs/{alias}").status_code == 200
    assert [c["metadata"]["document_id"] for c in chunks_of(api, owner, "owner data survive")] == ["kept"]


def test_4_sixteen_concurrent_reinserts_leave_one_whole_version(stack, api):
    db = register(api)
    versions = {n: " ".join(f"version{n} sentence {i} about the lighthouse keeper." for i in range(60))
                for n in range(16)}

    def write(n: int) -> int:
        with stack.client() as client:
            return insert_doc(client, db, "doc", versions[n]).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(write, range(16)))
    assert statuses == [200] * 16
    found = chunks_of(api, db, "lighthouse keeper", 1000)
    tags = {tag for c in found for tag in re.findall(r"version(\d+)", c["content"])}
    assert len(tags) == 1, tags  # one version, not a mix, not none
    winner = int(next(iter(tags)))
    alone = register(api)
    assert insert_doc(api, alone, "doc", versions[winner]).status_code == 200
    assert len(found) == len(chunks_of(api, alone, "lighthouse keeper", 1000))  # and whole


def test_5_an_insert_that_outlives_its_vector_db_writes_nothing(stack, api):
    db = register(api)
    long_text = " ".join(f"Paragraph {i} of a long document about tides and harbours." for i in range(1500))

    def slow_insert() -> httpx.Response:
        with stack.client() as client:
            return insert_doc(client, db, "long", long_text)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(slow_insert)
        time.sleep(0.5)
        assert api.delete(f"/v1/vector-dbs/{db}").status_code == 200
        register(api, db)
        answer = running.result()
    assert answer.status_code in (404, 409), answer.text
    assert chunks_of(api, db, "tides harbours") == []


@pytest.mark.parametrize("body, where", [
    ({"name": "\ud800"}, "name"),
    ({"name": "ok", "metadata": {"k": "\udc00"}}, "metadata.k"),
])
def test_6_lone_surrogates_are_refused_and_break_nothing(api, body, where):
    raw = json.dumps(body)  # json.dumps writes the surrogate as the escape \ud800
    r = api.post("/v1/vector_stores", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and where in r.json()["detail"] and "surrogate" in r.json()["detail"]
    assert api.get("/v1/vector_stores").status_code == 200
    assert api.get("/v1/vector-dbs").status_code == 200


def test_6_lone_surrogates_in_ids_content_and_queries(api):
    db = register(api)
    for body, path in [
        ({"vector_db_id": db, "documents": [{"document_id": "a\ud800", "content": "x"}]}, "/v1/tool-runtime/rag-tool/insert"),
        ({"vector_db_id": db, "documents": [{"document_id": "a", "content": "x\ud800"}]}, "/v1/tool-runtime/rag-tool/insert"),
        ({"vector_db_id": db, "query": "q\udfff"}, "/v1/vector-io/query"),
        ({"vector_db_id": "\ud83d", "embedding_model": "all-MiniLM-L6-v2"}, "/v1/vector-dbs"),
    ]:
        r = api.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == 400 and "surrogate" in r.json()["detail"], (path, r.text)
    assert chunks_of(api, db) == []


@pytest.mark.parametrize("control", ["\x00", "\x01", "\x08", "\x0c", "\x1f"])
def test_7_control_characters_in_document_ids_write_nothing(api, control):
    db = register(api)
    for _ in range(2):  # a retry adds nothing either
        r = insert_doc(api, db, f"doc{control}id", "Some text about a harbour.")
        assert r.status_code == 400 and "document_id" in r.json()["detail"] and "control" in r.json()["detail"]
    r = api.post("/v1/vector-io/insert", json={"vector_db_id": db, "chunks": [
        {"content": "harbour", "metadata": {"document_id": f"x{control}"}}]})
    assert r.status_code == 400
    assert chunks_of(api, db, "harbour") == []


@pytest.mark.parametrize("template", [
    "{index:>200000000}{chunk.content}", "{metadata:x}{index}{chunk.content}", "{index:s}{chunk.content}",
    "{index:99999999999999999999}{chunk.content}", "{index!r}{chunk.content}",
])
def test_8_templates_take_no_format_specs(api, template):
    db = register(api)
    assert insert_doc(api, db, "t", "The harbour master keeps the tide tables.").status_code == 200
    r = api.post("/v1/tool-runtime/rag-tool/query", json={"vector_db_ids": [db], "content": "tide tables",
                                                           "query_config": {"chunk_template": template}})
    assert r.status_code == 400 and "chunk_template" in r.json()["detail"] and len(r.content) < 2000


def test_9_a_chunk_s_bad_metadata_is_refused_at_insert(api):
    db = register(api)
    r = api.post("/v1/vector-io/insert", json={"vector_db_id": db, "chunks": [
        {"content": "the harbour at dawn", "metadata": {"document_id": "d", "metadata_token_count": "lots"}}]})
    assert r.status_code == 400 and "metadata_token_count" in r.json()["detail"]
    ok = api.post("/v1/vector-io/insert", json={"vector_db_id": db, "chunks": [
        {"content": "the harbour at dawn", "metadata": {"document_id": "d", "token_count": 4}}]})
    assert ok.status_code == 200
    q = api.post("/v1/tool-runtime/rag-tool/query", json={"vector_db_ids": [db], "content": "harbour at dawn"})
    assert q.status_code == 200


@pytest.mark.parametrize("path, body, field", [
    ("/v1/vector_stores/{store}/search", {"query": "q", "filters": {"type": "and", "filters": [1]}}, "filters"),
    ("/v1/vector_stores/{store}/search", {"query": "q", "ranking_options": {"score_threshold": "abc"}},
     "ranking_options.score_threshold"),
    ("/v1/vector_stores/{store}/search", {"query": "q", "ranking_options": {"score_threshold": [1]}},
     "ranking_options.score_threshold"),
    ("/v1/tool-runtime/invoke", {"tool_name": "insert_into_memory", "kwargs": {
        "vector_db_id": "{db}", "documents": [{"document_id": "a", "content": "x"}], "chunk_size_in_tokens": "abc"}},
     "kwargs.chunk_size_in_tokens"),
    ("/v1/tool-runtime/invoke", {"tool_name": "insert_into_memory", "kwargs": {
        "vector_db_id": "{db}", "documents": ["abc"]}}, "kwargs.documents.0"),
    ("/v1/tool-runtime/invoke", {"tool_name": "insert_into_memory", "kwargs": {
        "vector_db_id": "{db}", "documents": {}}}, "kwargs.documents"),
    ("/v1/tool-runtime/invoke", {"tool_name": "knowledge_search", "kwargs": {
        "vector_db_ids": ["{db}"], "query": "q", "query_config": "zz"}}, "kwargs.query_config"),
    ("/v1/tool-runtime/invoke", {"tool_name": "knowledge_search", "kwargs": {
        "vector_db_ids": [{}], "query": "q"}}, "kwargs.vector_db_ids.0"),
    ("/v1/tool-runtime/rag-tool/query", {"content": "q", "vector_db_ids": ["{db}"],
                                         "query_config": {"query_generator_config": "zz"}},
     "query_config.query_generator_config"),
])
def test_11_malformed_nested_input_is_a_400_naming_the_field(api, path, body, field):
    db = register(api)
    store = api.post("/v1/vector_stores", json={"name": "s"}).json()["id"]
    text = json.dumps(body).replace("{db}", db)
    r = api.post(path.replace("{store}", store), content=text, headers={"content-type": "application/json"})
    assert r.status_code == 400 and field in r.json()["detail"], r.text


# -- 2 and 10: bounded work, and the event loop keeps answering ----------------------------------


@pytest.fixture(scope="module")
def bounded(tmp_path_factory) -> Iterator[Server]:
    """A server whose parses stop after 5 s (the default is 30 s), so a hostile page costs the test little."""
    data_dir = tmp_path_factory.mktemp("integrity-bounded")
    config = data_dir / "run.yaml"
    config.write_text("providers:\n  vector_io:\n" + inline_vector_io() + "ingestion: {parse_timeout_seconds: 5}\n")
    server = start_server(data_dir, config)
    yield server
    server.stop()


@pytest.fixture
def bounded_api(bounded: Server) -> Iterator[httpx.Client]:
    with bounded.client() as client:
        yield client


def _bomb(size: int) -> bytes:
    """gzip(gzip(size zero bytes)), made in steps (never `size` bytes in memory)."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    parts = [inner.compress(block) for _ in range(size >> 20)] + [inner.flush()]
    return gzip.compress(b"".join(parts), 9)


class Bomb(http_server.BaseHTTPRequestHandler):
    body = b""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-encoding", "gzip, gzip")
        self.send_header("content-length", str(len(Bomb.body)))
        self.end_headers()
        self.wfile.write(Bomb.body)


def test_2_a_decompression_bomb_is_refused_in_bounded_memory(bounded, bounded_api):
    stack, api = bounded, bounded_api
    Bomb.body = _bomb(512 << 20)
    site = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Bomb)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    db = register(api)
    before = _rss_mb(stack.process.pid)
    try:
        with HealthWatch(stack.url) as health:
            r = insert_doc(api, db, "bomb", f"http://127.0.0.1:{site.server_address[1]}/bomb.txt")
    finally:
        site.shutdown()
    assert r.status_code == 413 and "larger than the limit" in r.json()["detail"], r.text
    assert _rss_mb(stack.process.pid) - before < 150
    print(f"[measure] health p99 during a 512 MiB gzip bomb fetch: {health.p99() * 1000:.1f} ms over {len(health.latencies)} probes")
    assert health.p99() < 0.1, health.p99()


def test_10_heavy_html_is_parsed_off_the_event_loop(bounded, bounded_api):
    stack, api = bounded, bounded_api
    db = register(api)
    with HealthWatch(stack.url) as health:
        flat = insert_doc(api, db, "bold", "<html><body>" + "<b></b>" * 1_000_000 + "<p>end</p></body></html>",
                          mime_type="text/html")
        nested = insert_doc(api, db, "deep", "<div>" * 300_000 + "deep" + "</div>" * 300_000, mime_type="text/html")
    assert flat.status_code in (200, 400) and nested.status_code in (200, 400), (flat.text, nested.text)
    print(f"[measure] health p99 during 7 MB flat and 3.3 MB nested hostile HTML inserts: {health.p99() * 1000:.1f} ms over {len(health.latencies)} probes")
    assert health.p99() < 0.1, health.p99()


def test_10_huge_queries_are_refused_quickly(bounded, bounded_api):
    stack, api = bounded, bounded_api
    db = register(api)
    # Encoded before the watch starts: encoding 2M items here would hold this process's GIL, and
    # the watch (a thread of this process) would time the test client, not the server.
    body = json.dumps({"vector_db_id": db, "query": ["x"] * 2_000_000}).encode()
    with HealthWatch(stack.url) as health:
        started = time.perf_counter()
        r = api.post("/v1/vector-io/query", content=body, headers={"content-type": "application/json"})
        took = time.perf_counter() - started
    # Refused by its size, before it is parsed.
    assert r.status_code == 413 and "a search takes at most" in r.json()["detail"] and took < 10, r.text
    long = api.post("/v1/vector-io/query", json={"vector_db_id": db, "query": "word " * 10_000})
    assert long.status_code == 400 and "query" in long.json()["detail"]
    print(f"[measure] health p99 during a 2M-item query: {health.p99() * 1000:.1f} ms over {len(health.latencies)} probes")
    assert health.p99() < 0.1, health.p99()


def test_a_deleted_file_stops_its_ingestion(stack, api):
    body = "\n\n".join(f"Section {i}: the ferry timetable for the northern route, entry {i}." for i in range(1000))
    file_id = api.post("/v1/files", files={"file": ("timetable.txt", body.encode())},
                       data={"purpose": "assistants"}).json()["id"]
    # The create answers when ingestion ends (attach_wait_seconds): the file is deleted meanwhile,
    # once its ingestion has started.
    name = f"ferries-{new_id()}"
    with ThreadPoolExecutor(1) as pool:
        creating = pool.submit(api.post, "/v1/vector_stores", json={"name": name, "file_ids": [file_id]})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stores = [s for s in api.get("/v1/vector_stores", params={"limit": 100}).json()["data"] if s["name"] == name]
            if stores and stores[0]["file_counts"]["in_progress"]:
                break
            time.sleep(0.05)
        assert api.delete(f"/v1/files/{file_id}").status_code == 200
        store = creating.result().json()["id"]
    assert api.get(f"/v1/files/{file_id}").status_code == 404
    time.sleep(3)
    hits = api.post(f"/v1/vector_stores/{store}/search", json={"query": "ferry timetable northern route"}).json()
    assert hits["data"] == []
    assert api.get(f"/v1/vector_stores/{store}/files").json()["data"] == []


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
