"""Low-level vector-io: chunks with and without precomputed embeddings, the three search modes,
score_threshold, and the 400s that bad chunks get."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from llama_stack_client import BadRequestError, LlamaStackClient

from conftest import new_id

FACTS = {
    "paris": "Paris is the capital and largest city of France.",
    "python": "Python is a programming language created by Guido van Rossum.",
    "milvus": "Milvus is an open-source vector database built for similarity search.",
    "everest": "Mount Everest is the highest mountain above sea level.",
    "lora": "LoRA adds low-rank adapter matrices to frozen weights for parameter-efficient finetuning.",
}


@pytest.fixture(scope="module")
def facts_db(stack):
    client = LlamaStackClient(base_url=stack.url)
    db = new_id("facts")
    client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2", embedding_dimension=384)
    client.vector_io.insert(
        vector_db_id=db,
        chunks=[{"content": text, "metadata": {"document_id": key, "topic": key}} for key, text in FACTS.items()],
    )
    yield db
    client.vector_dbs.unregister(vector_db_id=db)


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_each_mode_finds_the_fact(stack, facts_db, mode):
    client = LlamaStackClient(base_url=stack.url)
    result = client.vector_io.query(
        vector_db_id=facts_db, query="Which vector database does similarity search?",
        params={"max_chunks": 2, "mode": mode},
    )
    assert result.chunks[0].metadata["document_id"] == "milvus"
    assert len(result.chunks) == len(result.scores) <= 2
    assert result.scores == sorted(result.scores, reverse=True)


def test_vector_scores_are_cosine_similarities(stack, facts_db):
    client = LlamaStackClient(base_url=stack.url)
    result = client.vector_io.query(vector_db_id=facts_db, query=FACTS["paris"], params={"max_chunks": 5})
    assert result.chunks[0].metadata["document_id"] == "paris"
    assert result.scores[0] == pytest.approx(1.0, abs=0.01)
    assert all(-1.0 <= s <= 1.0001 for s in result.scores)


def test_score_threshold_drops_weak_matches(stack, facts_db):
    client = LlamaStackClient(base_url=stack.url)
    everything = client.vector_io.query(
        vector_db_id=facts_db, query="capital of France", params={"max_chunks": 5, "score_threshold": -1.0}
    )
    assert len(everything.chunks) == 5
    strict = client.vector_io.query(
        vector_db_id=facts_db, query="capital of France", params={"max_chunks": 5, "score_threshold": 0.5}
    )
    assert [c.metadata["document_id"] for c in strict.chunks] == ["paris"]
    assert all(s >= 0.5 for s in strict.scores)


def test_weighted_ranker(stack, facts_db):
    client = LlamaStackClient(base_url=stack.url)
    result = client.vector_io.query(
        vector_db_id=facts_db, query="low-rank adapters finetuning",
        params={"max_chunks": 3, "mode": "hybrid", "ranker": {"type": "weighted", "alpha": 0.7}},
    )
    assert result.chunks[0].metadata["document_id"] == "lora"


def test_precomputed_embeddings_are_used_as_given(stack):
    """A chunk stored with the vector of another text is found by that text, not by its own content."""
    from stackrag.providers.inference.sentence_transformers import shared_embedder

    client = LlamaStackClient(base_url=stack.url)
    db = new_id("pre")
    client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
    question = "Which city is the capital of France?"
    vector = shared_embedder().embed([question])[0].tolist()
    rng = np.random.default_rng(1)
    chunks = [{"content": "opaque payload 42", "metadata": {"document_id": "given"}, "embedding": vector}]
    chunks += [
        {"content": f"noise {i}", "metadata": {"document_id": f"noise-{i}"}, "embedding": rng.normal(size=384).tolist()}
        for i in range(3)
    ]
    client.vector_io.insert(vector_db_id=db, chunks=chunks)
    result = client.vector_io.query(vector_db_id=db, query=question, params={"max_chunks": 4})
    assert result.chunks[0].content == "opaque payload 42"
    assert result.scores[0] == pytest.approx(1.0, abs=0.01)
    # Re-inserting the same chunk replaces it instead of adding a duplicate.
    client.vector_io.insert(vector_db_id=db, chunks=chunks[:1])
    again = client.vector_io.query(vector_db_id=db, query=question, params={"max_chunks": 10, "score_threshold": -1.0})
    assert len(again.chunks) == 4
    client.vector_dbs.unregister(vector_db_id=db)


@pytest.mark.parametrize(
    "chunk, words",
    [
        ({"content": "x", "metadata": {}, "embedding": [0.1, 0.2]}, "has 2 dimensions"),
        ({"content": "", "metadata": {}}, "chunks[0].content is empty"),
        ({"content": "x", "metadata": {}, "embedding": [0.0] * 384}, "all zeros"),
        ({"content": {"type": "image", "image": {"url": "x"}}, "metadata": {}}, "image"),
        ({"content": "x", "metadata": {"document_id": "d" * 2000}}, "longer than 1024 bytes"),
    ],
)
def test_bad_chunks_are_400(stack, facts_db, chunk, words):
    client = LlamaStackClient(base_url=stack.url)
    with pytest.raises(BadRequestError) as err:
        client.vector_io.insert(vector_db_id=facts_db, chunks=[chunk])
    assert words in str(err.value)
    # Nothing half-inserted: the facts are still exactly five.
    result = client.vector_io.query(vector_db_id=facts_db, query="anything",
                                    params={"max_chunks": 50, "score_threshold": -1.0})
    assert len(result.chunks) == len(FACTS)


def test_query_param_errors(stack, facts_db):
    client = LlamaStackClient(base_url=stack.url)
    with pytest.raises(BadRequestError, match="params.mode"):
        client.vector_io.query(vector_db_id=facts_db, query="x", params={"mode": "semantic"})
    with pytest.raises(BadRequestError, match="ranker"):
        client.vector_io.query(vector_db_id=facts_db, query="x", params={"mode": "hybrid", "ranker": {"type": "max"}})
    with pytest.raises(BadRequestError, match="query must not be empty"):
        client.vector_io.query(vector_db_id=facts_db, query="   ")


def test_injection_shaped_document_ids_are_just_ids(stack):
    """A document_id that looks like a Milvus expression replaces only itself."""
    client = LlamaStackClient(base_url=stack.url)
    db = new_id("inj")
    client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
    sneaky = 'x" or document_id != "'
    for doc_id, text in [("x", "Plain document about rivers."), (sneaky, "Sneaky document about mountains."),
                         ("back\\slash", "Backslash document about lakes.")]:
        client.tool_runtime.rag_tool.insert(vector_db_id=db, chunk_size_in_tokens=64,
                                            documents=[{"document_id": doc_id, "content": text, "metadata": {}}])
    client.tool_runtime.rag_tool.insert(vector_db_id=db, chunk_size_in_tokens=64,
                                        documents=[{"document_id": sneaky, "content": "Sneaky again.", "metadata": {}}])
    result = client.vector_io.query(vector_db_id=db, query="document", params={"max_chunks": 10, "score_threshold": -1})
    assert sorted(c.metadata["document_id"] for c in result.chunks) == sorted(["x", sneaky, "back\\slash"])
    client.vector_dbs.unregister(vector_db_id=db)


def test_embedding_dimension_as_decimal_digits(stack):
    """Llama Stack's own test harness sends --embedding-dimension as the string "384"; its server takes
    it, and so must this one. Anything else that is not an integer stays a 400."""
    db = new_id("digits")
    ok = httpx.post(f"{stack.url}/v1/vector-dbs", json={"vector_db_id": db, "embedding_model": "all-MiniLM-L6-v2",
                                                        "embedding_dimension": "384"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["embedding_dimension"] == 384
    for bad in (True, "38x", 384.5):
        r = httpx.post(f"{stack.url}/v1/vector-dbs", json={"vector_db_id": new_id("digits"),
                                                           "embedding_model": "all-MiniLM-L6-v2",
                                                           "embedding_dimension": bad})
        assert r.status_code == 400 and "embedding_dimension" in r.json()["detail"], (bad, r.text)
    store = httpx.post(f"{stack.url}/v1/vector_stores", json={"name": "digits", "embedding_dimension": "384"})
    assert store.status_code == 200, store.text
    httpx.delete(f"{stack.url}/v1/vector-dbs/{db}")
