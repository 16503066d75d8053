"""What is registered survives a restart: list, query and insert work on the old vector DBs
(Llama Stack loses them). Each test runs its own server so it can stop and start it."""

from __future__ import annotations

import pytest
from llama_stack_client import LlamaStackClient

from conftest import inline_vector_io, new_id, remote_vector_io, start_server, write_config


@pytest.fixture(params=["inline", "remote"])
def config_for(request, tmp_path):
    def make(data_dir):
        if request.param == "inline":
            return write_config(data_dir / "run.yaml", inline_vector_io())
        return write_config(data_dir / "run.yaml", remote_vector_io(request.getfixturevalue("lite_uri")))

    return make


def test_restart_keeps_vector_dbs_and_models(tmp_path, config_for):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = config_for(data_dir)
    db = new_id("persist")
    server = start_server(data_dir, config)
    try:
        client = LlamaStackClient(base_url=server.url)
        client.models.register(model_id="mini-alias", provider_model_id="all-MiniLM-L6-v2",
                               provider_id="sentence-transformers", model_type="embedding",
                               metadata={"embedding_dimension": 384})
        client.vector_dbs.register(vector_db_id=db, embedding_model="mini-alias")
        client.vector_io.insert(vector_db_id=db, chunks=[
            {"content": "The lighthouse keeper lit the lamp at dusk.", "metadata": {"document_id": "a"}},
        ])
    finally:
        server.stop()

    server = start_server(data_dir, config)
    try:
        client = LlamaStackClient(base_url=server.url)
        assert db in [d.identifier for d in client.vector_dbs.list()]
        assert client.models.retrieve("mini-alias").provider_resource_id == "all-MiniLM-L6-v2"
        hits = client.vector_io.query(vector_db_id=db, query="who lights the lamp?")
        assert hits.chunks[0].content == "The lighthouse keeper lit the lamp at dusk."
        client.vector_io.insert(vector_db_id=db, chunks=[
            {"content": "Fog horns sound when the mist rolls in.", "metadata": {"document_id": "b"}},
        ])
        hits = client.vector_io.query(vector_db_id=db, query="fog horn", params={"max_chunks": 5})
        assert hits.chunks[0].metadata["document_id"] == "b"
        assert len(hits.chunks) == 2
    finally:
        server.stop()


def test_no_config_file_runs_on_defaults(tmp_path):
    """`stackrag run` with nothing but a data dir: Milvus Lite and MiniLM under that dir."""
    data_dir = tmp_path / "defaults"
    server = start_server(data_dir, None)
    try:
        client = LlamaStackClient(base_url=server.url)
        providers = {p.provider_id: p.provider_type for p in client.providers.list()}
        assert providers["milvus"] == "inline::milvus"
        client.vector_dbs.register(vector_db_id="d", embedding_model="all-MiniLM-L6-v2")
        client.vector_io.insert(vector_db_id="d", chunks=[{"content": "defaults work", "metadata": {"document_id": "x"}}])
        assert client.vector_io.query(vector_db_id="d", query="defaults").chunks[0].content == "defaults work"
    finally:
        server.stop()
    assert (data_dir / "milvus.db").exists()
    assert (data_dir / "registry.db").exists()


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_keyword_search_survives_a_restart(tmp_path, how):
    """Milvus Lite's keyword index lives in the server: a clean stop saves it beside milvus.db, a
    SIGKILL leaves none and the next start rebuilds it from the rows. Either way keyword search
    finds the same rows, and later inserts and deletes are searched too."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = write_config(data_dir / "run.yaml", inline_vector_io())
    db = new_id("kw")
    server = start_server(data_dir, config)
    try:
        client = LlamaStackClient(base_url=server.url)
        client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
        client.vector_io.insert(vector_db_id=db, chunks=[
            {"content": f"Note {i}: the lighthouse keeper lit the lamp.", "metadata": {"document_id": f"n{i}"}}
            for i in range(3)
        ] + [{"content": "Hedgehogs eat beetles.", "metadata": {"document_id": "hedgehog"}}])
    finally:
        if how == "kill":
            server.process.kill()
            server.process.wait()
        server.stop()
    snapshots = list((data_dir / "milvus.db.keywords").glob("*.npz"))
    assert len(snapshots) == (1 if how == "terminate" else 0)

    server = start_server(data_dir, config)
    try:
        client = LlamaStackClient(base_url=server.url)
        keyword = {"mode": "keyword", "max_chunks": 5}
        hits = client.vector_io.query(vector_db_id=db, query="hedgehogs", params=keyword)
        assert [c.metadata["document_id"] for c in hits.chunks] == ["hedgehog"]
        assert not list((data_dir / "milvus.db.keywords").glob("*.npz"))  # read, then removed
        client.vector_io.insert(vector_db_id=db, chunks=[
            {"content": "Hedgehogs hibernate in winter.", "metadata": {"document_id": "winter"}}])
        hits = client.vector_io.query(vector_db_id=db, query="hedgehogs", params=keyword)
        assert sorted(c.metadata["document_id"] for c in hits.chunks) == ["hedgehog", "winter"]
        hits = client.vector_io.query(vector_db_id=db, query="lighthouse", params=keyword)
        assert len(hits.chunks) == 3
    finally:
        server.stop()
