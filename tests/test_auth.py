"""API keys: every route but /v1/health needs one, read-only keys cannot change stored data, the real
clients send their api_key, keys never reach the log, and a public bind address without keys is
refused. One server of its own (keys from the environment)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import openai
import pytest
from llama_stack_client import AuthenticationError, LlamaStackClient, PermissionDeniedError

from conftest import ROOT, new_id, start_server
from stackrag.api.access import declared
from stackrag.services.toolgroups import TOOLGROUPS

WRITE_KEY = "rw-" + "a1b2c3d4" * 4
READ_KEY = "ro-" + "e5f6a7b8" * 4

# What a read-only key may POST, by name (a second opinion on the declarations the server makes:
# queries, inference and conversations). Any other POST or DELETE declared a read fails the test.
READING_POSTS = {
    "/vector-io/query", "/tool-runtime/rag-tool/query", "/vector_stores/{store_id}/search",
    "/inference/chat-completion", "/inference/completion", "/inference/embeddings", "/chat/completions",
    "/completions", "/embeddings", "/responses", "/agents", "/agents/{agent_id}/session",
    "/agents/{agent_id}/session/{session_id}/turn", "/agents/{agent_id}/session/{session_id}/turn/{turn_id}/resume",
    "/conversations", "/conversations/{conversation_id}", "/conversations/{conversation_id}/items",
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("auth"), None,
                          env={"STACKRAG_API_KEY": WRITE_KEY, "STACKRAG_READ_ONLY_API_KEY": READ_KEY})
    yield server
    server.stop()


def routes(url: str) -> list[tuple[str, str, str]]:
    """(method, path, declared access) of every operation, from the server's own OpenAPI schema."""
    spec = httpx.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {READ_KEY}"}).json()
    return [(method.upper(), path, declared(method.upper(), op)) for path, ops in spec["paths"].items()
            for method, op in ops.items()]


def test_the_declarations_agree_with_what_each_route_does(secured):
    for method, path, access in routes(secured.url):
        short = re.sub(r"^/v1(/openai/v1)?", "", path)
        if method == "GET":
            assert access == "read", (method, path)
        elif short == "/tool-runtime/invoke":
            assert access == "tool"
        else:
            assert access == ("read" if method == "POST" and short in READING_POSTS else "write"), (method, path)
    assert [t.name for tools in TOOLGROUPS.values() for t in tools if t.writes] == ["insert_into_memory"]


def call(url: str, method: str, path: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    concrete = re.sub(r"\{[^}]+\}", "nonexistent", path)
    body = {} if method == "POST" else None
    return httpx.request(method, url + concrete, headers=headers, json=body, timeout=60)


def test_every_route_but_health_needs_a_key_and_read_only_keys_cannot_write(secured):
    table = routes(secured.url)
    assert len(table) > 100
    writes = 0
    for method, path, access in table:
        anonymous = call(secured.url, method, path, None)
        if path == "/v1/health":
            assert anonymous.status_code == 200
            continue
        assert anonymous.status_code == 401, (method, path)
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in anonymous.json()["detail"]
        assert call(secured.url, method, path, "wrong-" + WRITE_KEY).status_code == 401, (method, path)
        read_only = call(secured.url, method, path, READ_KEY)
        if access == "write":
            writes += 1
            assert read_only.status_code == 403, (method, path, read_only.text)
            assert "read-only" in read_only.json()["detail"]
        else:
            assert read_only.status_code not in (401, 403), (method, path, read_only.text)
        # Past the key check: the route itself answers (400/404 for these made-up calls).
        assert call(secured.url, method, path, WRITE_KEY).status_code not in (401, 403), (method, path)
    assert writes > 30


@pytest.mark.parametrize("tool", [t for tools in TOOLGROUPS.values() for t in tools], ids=lambda t: t.name)
def test_a_tool_is_a_read_or_a_write_by_its_own_declaration(secured, tool):
    r = httpx.post(f"{secured.url}/v1/tool-runtime/invoke", headers={"Authorization": f"Bearer {READ_KEY}"},
                   json={"tool_name": tool.name, "kwargs": {}}, timeout=60)
    if tool.writes:
        assert r.status_code == 403 and tool.name in r.json()["detail"]
    else:
        assert r.status_code == 400  # past the key check: its missing kwargs are named


def test_the_real_clients_send_their_keys(secured):
    db = new_id("auth")
    writer = LlamaStackClient(base_url=secured.url, api_key=WRITE_KEY)
    writer.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
    writer.vector_io.insert(vector_db_id=db, chunks=[
        {"content": "The lighthouse keeper lit the lamp at dusk.", "metadata": {"document_id": "lamp"}}])

    reader = LlamaStackClient(base_url=secured.url, api_key=READ_KEY)
    hits = reader.vector_io.query(vector_db_id=db, query="who lights the lamp?")
    assert hits.chunks[0].metadata["document_id"] == "lamp"
    with pytest.raises(PermissionDeniedError):
        reader.vector_io.insert(vector_db_id=db, chunks=[{"content": "x", "metadata": {"document_id": "x"}}])
    with pytest.raises(PermissionDeniedError):
        reader.vector_dbs.unregister(vector_db_id=db)
    with pytest.raises(AuthenticationError):
        LlamaStackClient(base_url=secured.url, api_key="not-" + READ_KEY).vector_dbs.list()

    oai = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=READ_KEY)
    assert oai.embeddings.create(model="all-MiniLM-L6-v2", input="lamp").data[0].embedding
    with pytest.raises(openai.PermissionDeniedError):
        oai.vector_stores.create(name="not allowed")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{secured.url}/v1", api_key="wrong-key").models.list()
    writer.vector_dbs.unregister(vector_db_id=db)

    log = secured.log_path.read_text(errors="replace")
    assert WRITE_KEY not in log and READ_KEY not in log
    assert "API keys required (1 read-write, 1 read-only from the config" in log


def test_the_cli_sends_stackrag_api_key(secured, tmp_path):
    def cli(*args: str, key: str | None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "STACKRAG_API_KEY"}
        env.update({"STACKRAG_API_KEY": key} if key else {})
        return subprocess.run([sys.executable, "-m", "stackrag.cli", *args, "--url", secured.url],
                              capture_output=True, text=True, timeout=120, cwd=str(ROOT), env=env)

    db = new_id("auth-cli")
    (tmp_path / "lamp.md").write_text("The lighthouse keeper lit the lamp at dusk.\n")
    assert cli("ingest", str(tmp_path / "lamp.md"), "--vector-db", db, key=WRITE_KEY).returncode == 0
    assert db in cli("vector-dbs", "list", key=READ_KEY).stdout

    refused = cli("vector-dbs", "list", key=None)
    assert refused.returncode == 1 and "401" in refused.stderr and "set STACKRAG_API_KEY" in refused.stderr
    read_only = cli("vector-dbs", "delete", db, "--yes", key=READ_KEY)
    assert read_only.returncode == 1 and "403" in read_only.stderr and "read-only" in read_only.stderr
    checked = cli("doctor", key="not-" + READ_KEY)
    assert checked.returncode == 1 and "✗ server auth: the server refused our API key" in checked.stdout
    assert cli("vector-dbs", "delete", db, "--yes", key=WRITE_KEY).returncode == 0


def test_no_keys_is_loud_on_loopback_and_refused_on_a_public_address(stack, tmp_path):
    assert "AUTHENTICATION IS OFF" in stack.log_path.read_text(errors="replace")
    refused = subprocess.run(
        [sys.executable, "-m", "stackrag.cli", "run", "--host", "0.0.0.0", "--port", "1", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert refused.returncode != 0
    assert "refusing to serve on 0.0.0.0 without API keys" in refused.stderr
    short = subprocess.run(
        [sys.executable, "-m", "stackrag.cli", "run", "--port", "1", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STACKRAG_API_KEY": "short-secret"},
    )
    assert short.returncode != 0 and "shorter than 16 characters" in short.stderr
    assert "short-secret" not in short.stderr
