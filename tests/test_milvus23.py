"""Slow tier: stackrag on a real Milvus 2.3 server (no BM25, no hybrid search). The core RAG path
works, keyword and hybrid queries fall back to dense search, and /v1/providers says so.
Run by tests/run_slow.sh inside a private network namespace."""

from __future__ import annotations

import pytest
from llama_stack_client import LlamaStackClient
from llama_stack_client.types import Document

from conftest import register_tutorial_db, remote_vector_io, start_server, write_config
from milvus_servers import milvus23_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def milvus23(tmp_path_factory):
    with milvus23_server(tmp_path_factory.mktemp("milvus23")) as uri:
        yield uri


@pytest.fixture(scope="module")
def server23(milvus23, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("stackrag23")
    config = write_config(data_dir / "run.yaml", remote_vector_io(milvus23))
    server = start_server(data_dir, config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tutorial23(server23, docs_url):
    return register_tutorial_db(server23.url, docs_url, 512)


def test_provider_reports_the_dense_fallback(server23):
    client = LlamaStackClient(base_url=server23.url)
    milvus = next(p for p in client.providers.list() if p.provider_id == "milvus")
    assert milvus.health["status"] == "OK"
    assert "2.3" in milvus.health["message"] and "no BM25" in milvus.health["message"]


def test_knowledge_search_on_milvus23(server23, tutorial23):
    client = LlamaStackClient(base_url=server23.url)
    question = "How does LoRA replace weight updates with trainable low-rank decomposition matrices?"
    result = client.tool_runtime.rag_tool.query(content=question, vector_db_ids=[tutorial23])
    text = "".join(item.text for item in result.content)
    assert text.startswith("knowledge_search tool found 5 chunks:")
    assert result.metadata["document_ids"][0] == "num-3"


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_keyword_and_hybrid_fall_back_to_dense(server23, tutorial23, mode):
    client = LlamaStackClient(base_url=server23.url)
    dense = client.vector_io.query(vector_db_id=tutorial23, query="activation checkpointing memory",
                                   params={"max_chunks": 3, "mode": "vector"})
    other = client.vector_io.query(vector_db_id=tutorial23, query="activation checkpointing memory",
                                   params={"max_chunks": 3, "mode": mode})
    assert [c.content for c in other.chunks] == [c.content for c in dense.chunks]
    assert other.chunks[0].metadata["document_id"] == "num-2"


def test_reinsert_replaces_and_restart_keeps_data(server23, tutorial23, docs_url):
    client = LlamaStackClient(base_url=server23.url)
    before = client.vector_io.query(vector_db_id=tutorial23, query="chat format",
                                    params={"max_chunks": 500, "score_threshold": -1.0})
    client.tool_runtime.rag_tool.insert(
        vector_db_id=tutorial23, chunk_size_in_tokens=512,
        documents=[Document(document_id="num-0", content=f"{docs_url}/chat.rst", mime_type="text/plain", metadata={})],
    )
    after = client.vector_io.query(vector_db_id=tutorial23, query="chat format",
                                   params={"max_chunks": 500, "score_threshold": -1.0})
    assert len(after.chunks) == len(before.chunks) > 10

    server23.stop()
    restarted = start_server(server23.data_dir, server23.config_path)
    try:
        client = LlamaStackClient(base_url=restarted.url)
        assert tutorial23 in [d.identifier for d in client.vector_dbs.list()]
        again = client.vector_io.query(vector_db_id=tutorial23, query="chat format",
                                       params={"max_chunks": 500, "score_threshold": -1.0})
        assert len(again.chunks) == len(after.chunks)
    finally:
        restarted.stop()
