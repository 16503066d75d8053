"""API keys scoped to knowledge bases: two tenants on one server, each with a key of its own made by
`stackrag keys create`. Over every route of the OpenAPI schema that names an object, tenant A using
tenant B's ids gets the 404 that an id which does not exist gets (no existence leak), lists show
only A's own, and nothing of B's changes. A revoked key stops working without a restart."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Iterator

import httpx
import pytest

from conftest import ROOT, Server, inline_vector_io, start_server

MISSING = "does-not-exist"


def cli(*args: str, data_dir) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKRAG_")}
    return subprocess.run([sys.executable, "-m", "stackrag.cli", "keys", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120, cwd=str(ROOT), env=env)


def make_key(data_dir, *args: str) -> str:
    done = cli("create", *args, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Tenant:
    """One tenant's key, client, and one of each object it owns."""

    def __init__(self, server: Server, key: str, name: str):
        self.http = httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {key}"})
        self.ids: dict[str, str] = {}
        db = f"{name}-kb"
        self.post("/v1/vector-dbs", {"vector_db_id": db, "embedding_model": "all-MiniLM-L6-v2"})
        self.post("/v1/vector-io/insert", {"vector_db_id": db, "chunks": [
            {"content": f"{name} keeps its harbour charts here.", "metadata": {"document_id": f"{name}-doc"}}]})
        upload = self.http.post("/v1/files", files={"file": (f"{name}.txt", f"{name} ferry notes".encode())},
                                data={"purpose": "assistants"})
        assert upload.status_code == 200, upload.text
        file_id = upload.json()["id"]
        store = self.post("/v1/vector_stores", {"name": name, "file_ids": [file_id]})
        batch = self.post(f"/v1/vector_stores/{store['id']}/file_batches", {"file_ids": [file_id]})
        agent = self.post("/v1/agents", {"agent_config": {
            "model": "qwen2.5-coder-0.5b-instruct", "instructions": "Be brief.",
            "toolgroups": [{"name": "builtin::rag", "args": {"vector_db_ids": [db]}}]}})
        session = self.post(f"/v1/agents/{agent['agent_id']}/session", {"session_name": name})
        conversation = self.post("/v1/conversations", {"items": [{"type": "message", "role": "user", "content": "hi"}]})
        item = self.http.get(f"/v1/conversations/{conversation['id']}/items").json()["data"][0]
        self.ids = {"vector_db_id": db, "file_id": file_id, "store_id": store["id"], "batch_id": batch["id"],
                    "agent_id": agent["agent_id"], "session_id": session["session_id"],
                    "conversation_id": conversation["id"], "item_id": item["id"]}

    def post(self, path: str, body: dict) -> dict:
        r = self.http.post(path, json=body)
        assert r.status_code == 200, (path, r.text)
        return r.json() if r.content else {}


@pytest.fixture(scope="module")
def tenants(tmp_path_factory) -> Iterator[tuple[Server, Tenant, Tenant, str]]:
    data_dir = tmp_path_factory.mktemp("tenants")
    config = data_dir / "run.yaml"
    config.write_text("providers:\n  inference:\n  - provider_id: llama-cpp\n    provider_type: inline::llama-cpp\n"
                      "    config: {preload: false}\n  vector_io:\n" + inline_vector_io())
    admin = make_key(data_dir, "--name", "admin")
    key_a, key_b = make_key(data_dir, "--scoped", "--name", "a"), make_key(data_dir, "--scoped", "--name", "b")
    server = start_server(data_dir, config)
    a, b = Tenant(server, key_a, "alpha"), Tenant(server, key_b, "bravo")
    yield server, a, b, admin
    server.stop()


def operations(server: Server, admin: str) -> list[tuple[str, str]]:
    spec = httpx.get(f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {admin}"}).json()
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]


# A valid body for each POST whose path names an object, so the request reaches the lookup.
BODIES = {
    "/vector_stores/{store_id}": {"name": "renamed"},
    "/vector_stores/{store_id}/search": {"query": "charts"},
    "/vector_stores/{store_id}/files": {"file_id": "{file_id}"},
    "/vector_stores/{store_id}/files/{file_id}": {"attributes": {"k": "v"}},
    "/vector_stores/{store_id}/file_batches": {"file_ids": ["{file_id}"]},
    "/conversations/{conversation_id}": {"metadata": {"k": "v"}},
    "/conversations/{conversation_id}/items": {"items": [{"type": "message", "role": "user", "content": "x"}]},
    "/agents/{agent_id}/session": {"session_name": "x"},
    "/agents/{agent_id}/session/{session_id}/turn": {"messages": [{"role": "user", "content": "x"}], "stream": False},
}


def concrete(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{([^}:]+)(:path)?\}", lambda m: ids.get(m.group(1), MISSING), path)


def test_another_tenant_s_ids_are_404_on_every_route(tenants):
    server, a, b, admin = tenants
    checked = 0
    for method, path in operations(server, admin):
        names = re.findall(r"\{([^}:]+)", path)
        if not names or not set(names) <= set(b.ids) | {"turn_id", "step_id", "response_id", "model_id",
                                                          "provider_id", "toolgroup_id", "tool_name"}:
            continue
        if not set(names) & set(b.ids):
            continue
        short = re.sub(r"^/v1(/openai/v1)?", "", path)
        if method == "POST" and short not in BODIES and not short.endswith("/cancel"):
            continue
        def body_with(file_id: str) -> dict | None:
            if method != "POST":
                return None
            if short.endswith("/file_batches"):
                return {"file_ids": [file_id]}
            return {k: (v.replace("{file_id}", file_id) if isinstance(v, str) else v)
                    for k, v in BODIES.get(short, {}).items()}

        foreign = a.http.request(method, concrete(path, b.ids), json=body_with(b.ids["file_id"]))
        missing = a.http.request(method, concrete(path, {k: MISSING for k in b.ids}), json=body_with(MISSING))
        assert foreign.status_code == 404, (method, path, foreign.status_code, foreign.text)
        # The same answer an id that does not exist gets, the id aside: nothing tells that it exists.
        shown = foreign.json()["detail"]
        for value in b.ids.values():
            shown = shown.replace(value, MISSING)
        assert shown == missing.json()["detail"], (method, path)
        checked += 1
    assert checked >= 25


def test_ids_in_bodies_are_404_too(tenants):
    server, a, b, admin = tenants
    db, store = b.ids["vector_db_id"], b.ids["store_id"]
    for path, body in [
        ("/v1/vector-io/query", {"vector_db_id": db, "query": "charts"}),
        ("/v1/vector-io/insert", {"vector_db_id": db, "chunks": [{"content": "x", "metadata": {"document_id": "x"}}]}),
        ("/v1/tool-runtime/rag-tool/query", {"vector_db_ids": [db], "content": "charts"}),
        ("/v1/tool-runtime/rag-tool/insert", {"vector_db_id": db, "documents": [{"document_id": "x", "content": "x"}]}),
        ("/v1/tool-runtime/invoke", {"tool_name": "knowledge_search", "kwargs": {"vector_db_ids": [db], "query": "q"}}),
        ("/v1/agents", {"agent_config": {"model": "qwen2.5-coder-0.5b-instruct", "toolgroups": [
            {"name": "builtin::rag", "args": {"vector_db_ids": [db]}}]}}),
        ("/v1/responses", {"model": "qwen2.5-coder-0.5b-instruct", "input": "hi",
                           "tools": [{"type": "file_search", "vector_store_ids": [store]}]}),
    ]:
        r = a.http.post(path, json=body)
        assert r.status_code == 404, (path, r.text)
    taken = a.http.post("/v1/vector-dbs", json={"vector_db_id": db, "embedding_model": "all-MiniLM-L6-v2"})
    assert taken.status_code == 409 and "taken" in taken.json()["detail"]


def test_lists_show_only_the_tenant_s_own(tenants):
    server, a, b, admin = tenants
    as_a = {
        "vector_dbs": [d["identifier"] for d in a.http.get("/v1/vector-dbs").json()["data"]],
        "stores": [s["id"] for s in a.http.get("/v1/vector_stores").json()["data"]],
        "files": [f["id"] for f in a.http.get("/v1/files").json()["data"]],
        "agents": [g["agent_id"] for g in a.http.get("/v1/agents").json()["data"]],
    }
    assert set(as_a["vector_dbs"]) == {a.ids["vector_db_id"], a.ids["store_id"]}
    assert as_a["stores"] and b.ids["store_id"] not in as_a["stores"] and a.ids["store_id"] in as_a["stores"]
    assert as_a["files"] == [a.ids["file_id"]] and as_a["agents"] == [a.ids["agent_id"]]
    everyone = httpx.get(f"{server.url}/v1/vector-dbs", headers={"Authorization": f"Bearer {admin}"}).json()["data"]
    assert {a.ids["vector_db_id"], b.ids["vector_db_id"]} <= {d["identifier"] for d in everyone}
    assert "owner" not in str(a.http.get(f"/v1/files/{a.ids['file_id']}").json())


def test_nothing_of_the_other_tenant_changed(tenants):
    server, a, b, admin = tenants
    hits = b.http.post("/v1/vector-io/query", json={"vector_db_id": b.ids["vector_db_id"], "query": "harbour charts"})
    assert hits.json()["chunks"][0]["content"] == "bravo keeps its harbour charts here."
    assert b.http.get(f"/v1/vector_stores/{b.ids['store_id']}").json()["name"] == "bravo"
    assert b.http.get(f"/v1/files/{b.ids['file_id']}").status_code == 200
    assert b.http.get(f"/v1/agents/{b.ids['agent_id']}").status_code == 200


def test_a_revoked_key_stops_without_a_restart(tenants, tmp_path):
    server, a, b, admin = tenants
    key = make_key(server.data_dir, "--vector-db", a.ids["vector_db_id"], "--read-only", "--name", "temporary")
    reader = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"})
    deadline = time.monotonic() + 10
    while reader.get("/v1/vector-dbs").status_code == 401 and time.monotonic() < deadline:
        time.sleep(0.2)  # a new key is seen within seconds too
    assert [d["identifier"] for d in reader.get("/v1/vector-dbs").json()["data"]] == [a.ids["vector_db_id"]]
    assert reader.post("/v1/vector-io/insert", json={"vector_db_id": a.ids["vector_db_id"], "chunks": [
        {"content": "x", "metadata": {"document_id": "x"}}]}).status_code == 403
    listed = cli("list", data_dir=server.data_dir).stdout
    key_id = next(line.split()[0] for line in listed.splitlines() if " temporary " in line)
    assert cli("revoke", key_id, data_dir=server.data_dir).returncode == 0
    deadline = time.monotonic() + 10
    while reader.get("/v1/vector-dbs").status_code != 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reader.get("/v1/vector-dbs").status_code == 401
    assert key not in server.log_path.read_text(errors="replace")
