"""Health, version, providers, models, vector DBs, toolgroups and tools: shapes as llama-stack-client
reads them, and the 400/404 paths."""

from __future__ import annotations

import pytest
from llama_stack_client import BadRequestError, LlamaStackClient, NotFoundError

from conftest import new_id


def test_health_version_and_docs(http):
    assert http.get("/v1/health").json() == {"status": "OK"}
    assert http.get("/v1/version").json() == {"version": "0.2.12"}
    assert http.get("/docs").status_code == 200
    spec = http.get("/openapi.json").json()
    assert "/v1/tool-runtime/rag-tool/insert" in spec["paths"]


def test_providers_list_and_get(stack):
    client = LlamaStackClient(base_url=stack.url)
    providers = {p.provider_id: p for p in client.providers.list()}
    milvus = providers["milvus"]
    assert milvus.api == "vector_io"
    assert milvus.provider_type in ("inline::milvus", "remote::milvus")
    assert milvus.health["status"] == "OK"
    assert providers["sentence-transformers"].api == "inference"
    # The files API is the storage layer's; it is listed so that clients looking for it find it.
    assert (providers["files"].api, providers["files"].provider_type) == ("files", "inline::localfs")
    if milvus.provider_type == "remote::milvus":
        assert milvus.config["token"] == "********"  # secrets never leave the server
    assert client.providers.retrieve("milvus").provider_id == "milvus"
    with pytest.raises(NotFoundError):
        client.providers.retrieve("nope")


def test_default_embedding_model_is_registered(stack):
    client = LlamaStackClient(base_url=stack.url)
    model = client.models.retrieve("all-MiniLM-L6-v2")
    assert model.model_type == "embedding"
    assert model.metadata["embedding_dimension"] == 384
    assert model.provider_id == "sentence-transformers"
    assert "all-MiniLM-L6-v2" in [m.identifier for m in client.models.list()]


def test_model_register_and_unregister(stack):
    client = LlamaStackClient(base_url=stack.url)
    alias = new_id("minilm")
    model = client.models.register(
        model_id=alias, provider_model_id="sentence-transformers/all-MiniLM-L6-v2",
        provider_id="sentence-transformers", model_type="embedding", metadata={"embedding_dimension": 384},
    )
    assert model.identifier == alias and model.provider_resource_id == "sentence-transformers/all-MiniLM-L6-v2"
    db = new_id()
    client.vector_dbs.register(vector_db_id=db, embedding_model=alias)
    client.vector_io.insert(vector_db_id=db, chunks=[{"content": "aliases work", "metadata": {"document_id": "a"}}])
    assert client.vector_io.query(vector_db_id=db, query="aliases").chunks[0].content == "aliases work"
    client.vector_dbs.unregister(vector_db_id=db)
    client.models.unregister(alias)
    with pytest.raises(NotFoundError):
        client.models.retrieve(alias)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"model_id": "e", "model_type": "embedding", "metadata": {}}, "embedding_dimension"),
        ({"model_id": "e", "provider_id": "nope"}, "provider_id 'nope'"),
        ({"model_id": "e", "model_type": "embedding", "provider_id": "sentence-transformers",
          "metadata": {"embedding_dimension": 768}, "provider_model_id": "nomic-embed-text"}, "not available offline"),
    ],
)
def test_model_register_errors(stack, kwargs, words):
    client = LlamaStackClient(base_url=stack.url)
    with pytest.raises(BadRequestError) as err:
        client.models.register(**kwargs)
    assert words in str(err.value)


def test_vector_db_lifecycle_and_errors(stack):
    client = LlamaStackClient(base_url=stack.url)
    db = "odd id/with spaces-and-ünïcode"
    registered = client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
    assert registered.identifier == db
    # Registering the same id again is idempotent.
    assert client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2").identifier == db
    client.vector_io.insert(vector_db_id=db, chunks=[{"content": "hello", "metadata": {"document_id": "h"}}])
    assert client.vector_io.query(vector_db_id=db, query="hello").chunks[0].content == "hello"
    client.vector_dbs.unregister(vector_db_id=db)
    with pytest.raises(NotFoundError):
        client.vector_dbs.retrieve(vector_db_id=db)
    with pytest.raises(NotFoundError):
        client.vector_io.query(vector_db_id=db, query="hello")
    with pytest.raises(NotFoundError, match="Model 'nope' not found"):
        client.vector_dbs.register(vector_db_id=new_id(), embedding_model="nope")
    with pytest.raises(BadRequestError, match="provider_id"):
        client.vector_dbs.register(vector_db_id=new_id(), embedding_model="all-MiniLM-L6-v2", provider_id="faiss")


def test_rag_toolgroup_and_tools(stack):
    client = LlamaStackClient(base_url=stack.url)
    groups = client.toolgroups.list()
    assert [g.identifier for g in groups] == ["builtin::rag"]
    tools = {t.identifier: t for t in client.tools.list(toolgroup_id="builtin::rag")}
    assert set(tools) == {"knowledge_search", "insert_into_memory"}
    search = tools["knowledge_search"]
    assert search.provider_id == "rag-runtime" and search.toolgroup_id == "builtin::rag"
    assert search.description == "Search for information in a database."
    assert [(p.name, p.parameter_type, p.required) for p in search.parameters] == [("query", "string", True)]
    assert tools["insert_into_memory"].parameters == []
    assert [t.identifier for t in client.tools.list(toolgroup_id="builtin::rag/knowledge_search")] == ["knowledge_search"]
    with pytest.raises(NotFoundError):
        client.tools.list(toolgroup_id="builtin::nope")


def test_validation_errors_name_the_field(http):
    r = http.post("/v1/vector-dbs", json={"embedding_model": "all-MiniLM-L6-v2"})
    assert r.status_code == 400
    body = r.json()
    assert "vector_db_id" in body["detail"]
    assert body["error"]["detail"]["errors"][0]["loc"] == ["body", "vector_db_id"]
    r = http.post("/v1/tool-runtime/rag-tool/insert", json={"vector_db_id": "x", "documents": "nope"})
    assert r.status_code == 400 and "documents" in r.json()["detail"]
    r = http.post("/v1/vector-io/query", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert http.get("/v1/nowhere").status_code == 404


def test_oversized_body_is_413(http):
    from stackrag.api.app import MAX_REQUEST_BYTES

    r = http.post("/v1/vector-io/insert", content=b"x" * (MAX_REQUEST_BYTES + 1),
                  headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "larger than" in r.json()["detail"]
