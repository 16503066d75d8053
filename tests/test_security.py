"""Hostile input against a real server, end to end over HTTP: server-side request forgery, oversized
and malformed documents, injection-shaped ids and filters, uploaded files that try to run as pages.

One server of its own, as a user would deploy it: an API key, private URLs NOT allowed, small ingestion
limits. Targets on this machine are a counting HTTP server on 127.0.0.1 (it must see no request).
10.x and 169.254.169.254 are refused before any connection is made, so nothing leaves the machine.
A public page that redirects to a private one, and a name whose DNS answers mix public and private
addresses, need a resolver and a public host this sandbox does not have: those two are tested at the
fetch layer in tests/test_documents.py (test_every_redirect_hop_is_checked,
test_any_private_answer_refuses_the_name, test_the_checked_address_is_the_one_dialled).
API keys (the 401/403 matrix over every route) are in tests/test_auth.py.
"""

from __future__ import annotations

import base64
import http.server as http_server
import threading
import time
from typing import Iterator

import httpx
import pytest
from openai import OpenAI

from conftest import Server, inline_vector_io, new_id, start_server

KEY = "sec-" + "0f1e2d3c" * 4
MAX_DOCUMENT_BYTES = 20_000
MAX_DOCUMENTS = 4
MAX_CHUNKS = 40


class Counting(http_server.BaseHTTPRequestHandler):
    hits = 0

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        Counting.hits += 1
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        body = b"secret internal page"
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def internal() -> Iterator[int]:
    site = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield site.server_address[1]
    site.shutdown()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("security")
    config = data_dir / "run.yaml"
    config.write_text(
        "providers:\n  vector_io:\n" + inline_vector_io() +
        f"ingestion: {{max_document_bytes: {MAX_DOCUMENT_BYTES}, max_documents_per_request: {MAX_DOCUMENTS}, "
        f"max_chunks_per_request: {MAX_CHUNKS}}}\n"
        "fetch: {timeout_seconds: 3}\n"
    )
    server = start_server(data_dir, config, env={"STACKRAG_API_KEY": KEY, "STACKRAG_ALLOW_PRIVATE_URLS": "0"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(guarded) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=guarded.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def db(api) -> str:
    vector_db_id = new_id("sec")
    r = api.post("/v1/vector-dbs", json={"vector_db_id": vector_db_id, "embedding_model": "all-MiniLM-L6-v2"})
    assert r.status_code == 200, r.text
    return vector_db_id


def insert(api: httpx.Client, db: str, *contents: str, chunk_size: int = 128) -> httpx.Response:
    return api.post("/v1/tool-runtime/rag-tool/insert", json={
        "vector_db_id": db, "chunk_size_in_tokens": chunk_size,
        "documents": [{"document_id": f"doc-{i}", "content": c, "metadata": {}} for i, c in enumerate(contents)]})


def stored_chunks(api: httpx.Client, db: str) -> int:
    r = api.post("/v1/vector-io/query", json={"vector_db_id": db, "query": "anything at all",
                                              "params": {"max_chunks": 100, "score_threshold": -1.0}})
    assert r.status_code == 200, r.text
    return len(r.json()["chunks"])


# --- server-side request forgery ---------------------------------------------------------------


SSRF_TARGETS = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",            # a name that resolves to loopback
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",   # IPv4-mapped IPv6
    "http://2130706433:{port}/",           # 127.0.0.1 as one decimal number
    "http://127.1:{port}/",
    "http://0.0.0.0:{port}/",
    "http://10.0.0.1/",
    "http://192.168.0.1/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fe80::1]/",
]


@pytest.mark.parametrize("target", SSRF_TARGETS)
def test_private_and_metadata_urls_are_refused(api, db, internal, target):
    url = target.format(port=internal)
    before = Counting.hits
    started = time.monotonic()
    r = insert(api, db, url)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert ("private" in detail and "allow_private_urls" in detail) or "metadata" in detail, detail
    assert time.monotonic() - started < 5
    assert Counting.hits == before  # the internal site never saw the request
    assert stored_chunks(api, db) == 0


def test_a_redirect_from_an_allowed_page_to_metadata_is_refused(tmp_path, internal):
    """Loopback allowed (as for a local docs server) but the redirect target, 169.254.169.254, is link-local:
    each hop is checked, so the redirect is refused before any connection to it."""
    config = tmp_path / "run.yaml"
    config.write_text("providers:\n  vector_io:\n" + inline_vector_io() + "fetch: {timeout_seconds: 3}\n")
    # allow_private_urls admits every private range; the check that stays is the metadata one.
    server = start_server(tmp_path / "data", config)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            vector_db_id = new_id("redir")
            client.post("/v1/vector-dbs", json={"vector_db_id": vector_db_id, "embedding_model": "all-MiniLM-L6-v2"})
            started = time.monotonic()
            r = insert(client, vector_db_id, f"http://127.0.0.1:{internal}/redirect")
            assert r.status_code == 400, r.text
            assert "169.254.169.254" in r.json()["detail"]
            assert time.monotonic() - started < 5
    finally:
        server.stop()


# --- size limits ---------------------------------------------------------------------------------


def test_oversized_bodies_are_refused_with_or_without_a_length(api):
    from stackrag.api.app import MAX_REQUEST_BYTES

    r = api.post("/v1/vector-io/insert", content=b"x" * (MAX_REQUEST_BYTES + 1),
                 headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: only counting while reading can stop it
        for _ in range(MAX_REQUEST_BYTES // 65536 + 2):
            yield b"x" * 65536

    r = api.post("/v1/vector-io/insert", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert api.get("/v1/health").status_code == 200


def test_document_and_request_limits_are_clear_and_write_nothing(api, db):
    big = "word " * (MAX_DOCUMENT_BYTES // 5 + 100)
    r = insert(api, db, big)
    assert r.status_code == 413 and str(MAX_DOCUMENT_BYTES) in r.json()["detail"], r.text
    inline = "data:text/plain;base64," + base64.b64encode(big.encode()).decode()
    r = insert(api, db, inline)
    assert r.status_code == 413, r.text
    r = insert(api, db, *(["short note"] * (MAX_DOCUMENTS + 1)))
    assert r.status_code in (400, 413) and str(MAX_DOCUMENTS) in r.json()["detail"], r.text
    many_chunks = " ".join(f"sentence number {i} about rivers and lakes." for i in range(300))
    r = insert(api, db, many_chunks, chunk_size=16)
    assert r.status_code in (400, 413) and str(MAX_CHUNKS) in r.json()["detail"], r.text
    assert stored_chunks(api, db) == 0


@pytest.mark.parametrize("name,mime,payload", [
    ("truncated-pdf", "application/pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nendobj\n" * 3),
    ("garbage-pdf", "application/pdf", bytes(range(256)) * 40),
    ("deep-html", "text/html", b"<div>" * 4000 + b"deep text" + b"</div>" * 4000),
    ("binary-as-text", "text/plain", b"\x00\xff\xfe" * 3000),
])
def test_broken_files_fail_cleanly_and_the_server_stays_up(api, db, name, mime, payload):
    data_url = f"data:{mime};base64," + base64.b64encode(payload).decode()
    started = time.monotonic()
    r = insert(api, db, data_url)
    assert r.status_code in (200, 400, 413), r.text  # read or refused, never a 500
    if r.status_code != 200:
        assert r.json()["detail"], r.text
    assert time.monotonic() - started < 30
    assert api.get("/v1/health").status_code == 200


# --- injection-shaped ids and filters ----------------------------------------------------------


@pytest.mark.parametrize("vector_db_id", ['x" or 1==1 or "', "a' || 'b", "../../etc/passwd", "db) or (1 == 1"])
def test_injection_shaped_vector_db_ids_are_plain_names(api, vector_db_id):
    r = api.post("/v1/vector-dbs", json={"vector_db_id": vector_db_id, "embedding_model": "all-MiniLM-L6-v2"})
    assert r.status_code == 200, r.text
    assert insert(api, vector_db_id, "Otters hold hands while they sleep.").status_code == 200
    assert stored_chunks(api, vector_db_id) == 1
    r = api.get(f"/v1/vector-dbs/{httpx.URL(vector_db_id).raw_path.decode()}")
    assert r.status_code in (200, 404)  # some spellings cannot be a path segment; never a 500
    r = api.delete("/v1/vector-dbs/" + vector_db_id.replace("/", "%2F"))
    assert r.status_code in (200, 204, 404)


def test_injection_shaped_filters_match_nothing_extra(guarded):
    openai = OpenAI(base_url=f"{guarded.url}/v1", api_key=KEY, max_retries=0)
    store = openai.vector_stores.create(name="filters")
    for team in ("red", "blue"):
        file = openai.files.create(file=(f"{team}.txt", f"The {team} team plans the river survey.".encode()),
                                   purpose="assistants")
        openai.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=file.id,
                                                   attributes={"team": team})
    for value in ['red" or team != "', "red' OR '1'='1", "* ", "red) or (1==1"]:
        hits = openai.vector_stores.search(vector_store_id=store.id, query="river survey",
                                           filters={"type": "eq", "key": "team", "value": value})
        assert hits.data == [], value
    hits = openai.vector_stores.search(vector_store_id=store.id, query="river survey",
                                       filters={"type": "eq", "key": "team", "value": "red"})
    assert [h.attributes["team"] for h in hits.data] == ["red"]
    r = httpx.post(f"{guarded.url}/v1/vector_stores/{store.id}/search", headers={"Authorization": f"Bearer {KEY}"},
                   json={"query": "x", "filters": {"type": "exec", "key": "team", "value": "red"}})
    assert r.status_code == 400 and "filters.type" in r.json()["detail"]


@pytest.mark.parametrize("file_id", ["..%2F..%2Fregistry.db", "..", "file-x%00.txt", "%2Fetc%2Fpasswd"])
def test_file_ids_cannot_name_paths(api, file_id):
    r = api.get(f"/v1/files/{file_id}/content")
    assert r.status_code in (400, 404), r.text
    assert b"SQLite" not in r.content and b"root:" not in r.content


def test_an_uploaded_page_is_served_as_a_download_never_as_a_page(guarded):
    openai = OpenAI(base_url=f"{guarded.url}/v1", api_key=KEY, max_retries=0)
    page = b"<html><script>fetch('/v1/vector-dbs').then(r => r.text()).then(alert)</script></html>"
    file = openai.files.create(file=("evil.html", page, "text/html"), purpose="assistants")
    r = httpx.get(f"{guarded.url}/v1/files/{file.id}/content", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.content == page
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith("attachment")
