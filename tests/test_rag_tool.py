"""The tutorial's RAG path with the official llama-stack-client 0.2.12: register, insert the four
torchtune tutorials from http URLs with 1024-token chunks, and ask knowledge_search."""

from __future__ import annotations

import re

import pytest
from llama_stack_client import BadRequestError, LlamaStackClient, NotFoundError
from llama_stack_client.types import Document

from conftest import new_id, register_tutorial_db


@pytest.fixture(scope="session")
def tutorial_db(stack, docs_url):
    """One vector DB per server holding the tutorial documents, inserted exactly as the tutorial does."""
    return register_tutorial_db(stack.url, docs_url, 1024)


def test_register_keeps_the_callers_id(stack, tutorial_db):
    client = LlamaStackClient(base_url=stack.url)
    db = client.vector_dbs.retrieve(vector_db_id=tutorial_db)
    assert db.identifier == tutorial_db
    assert db.provider_resource_id == tutorial_db
    assert db.provider_id == "milvus"
    assert db.embedding_model == "all-MiniLM-L6-v2"
    assert db.embedding_dimension == 384
    assert tutorial_db in [d.identifier for d in client.vector_dbs.list()]


@pytest.mark.parametrize(
    "question, expected_doc",
    [
        ("How does LoRA replace weight updates with trainable low-rank decomposition matrices?", "num-3"),
        ("activation checkpointing and gradient accumulation to reduce memory", "num-2"),
        ("Llama3 chat format special tokens and prompt template", "num-0"),
        ("grouped-query attention in Llama3 8B and the new tokenizer vocabulary", "num-1"),
    ],
)
def test_knowledge_search_finds_the_right_document(stack, tutorial_db, question, expected_doc):
    client = LlamaStackClient(base_url=stack.url)
    result = client.tool_runtime.rag_tool.query(content=question, vector_db_ids=[tutorial_db])
    text = "".join(item.text for item in result.content)
    assert text.startswith("knowledge_search tool found 5 chunks:\nBEGIN of knowledge_search tool results.\n")
    assert "END of knowledge_search tool results.\n" in text
    assert text.endswith(
        f'The above results were retrieved to help answer the user\'s query: "{question}". '
        "Use them as supporting information only in answering this query.\n"
    )
    assert re.search(r"Result 1\nContent: .+\nMetadata: \{'document_id': 'num-\d'\}\n", text, re.S)
    assert "token_count" not in text
    ids = result.metadata["document_ids"]
    assert ids[0] == expected_doc, ids
    assert len(ids) == len(result.metadata["chunks"]) == len(result.metadata["scores"])
    assert result.metadata["scores"] == sorted(result.metadata["scores"], reverse=True)


def test_chunks_respect_size_and_carry_metadata(stack, tutorial_db):
    client = LlamaStackClient(base_url=stack.url)
    result = client.vector_io.query(vector_db_id=tutorial_db, query="LoRA rank", params={"max_chunks": 10})
    assert len(result.chunks) == 10
    for chunk in result.chunks:
        assert chunk.metadata["document_id"].startswith("num-")
        assert 0 < chunk.metadata["token_count"] <= 1024
        assert "metadata_token_count" in chunk.metadata


def test_text_beyond_the_models_window_is_searchable(stack, tutorial_db, shared_dir):
    """A 1024-token chunk is embedded as several windows: a phrase near a chunk's end is found too."""
    client = LlamaStackClient(base_url=stack.url)
    text = (shared_dir / "corpus/torchtune/memory_optimizations.rst").read_text()
    # A sentence from deep inside the document, far past the first 256 tokens of any chunk start.
    needle = next(line for line in text.splitlines()[len(text.splitlines()) * 2 // 3:] if len(line.split()) > 12)
    result = client.vector_io.query(vector_db_id=tutorial_db, query=needle, params={"max_chunks": 3})
    assert any(needle.strip() in c.content for c in result.chunks)
    assert result.chunks[0].metadata["document_id"] == "num-2"


def test_custom_chunk_template_and_max_chunks(stack, tutorial_db):
    client = LlamaStackClient(base_url=stack.url)
    result = client.tool_runtime.rag_tool.query(
        content="memory", vector_db_ids=[tutorial_db],
        query_config={"max_chunks": 2, "chunk_template": "[{index}] {chunk.content}\n"},
    )
    text = "".join(item.text for item in result.content)
    assert text.startswith("knowledge_search tool found 2 chunks:")
    assert "[1] " in text and "[2] " in text and "Metadata:" not in text


def test_max_tokens_in_context_cuts_the_result(stack, tutorial_db):
    client = LlamaStackClient(base_url=stack.url)
    result = client.tool_runtime.rag_tool.query(
        content="LoRA", vector_db_ids=[tutorial_db], query_config={"max_tokens_in_context": 1100},
    )
    text = "".join(item.text for item in result.content)
    assert text.startswith("knowledge_search tool found 5 chunks:")  # N counts the picked chunks, as in Llama Stack
    shown = len(result.metadata["document_ids"])
    assert 1 <= shown < 5 and text.count("\nContent: ") == shown
    assert sum(len(c) for c in result.metadata["chunks"]) < 1100 * 8


@pytest.mark.parametrize(
    "query_config, words",
    [
        ({"chunk_template": "no placeholders"}, "{index} and {chunk.content}"),
        ({"chunk_template": "{index} {chunk.content} {chunk.__class__}"}, "remove chunk.__class__"),
        ({"max_chunks": 0}, "max_chunks"),
        ({"mode": "fuzzy"}, "mode"),
    ],
)
def test_bad_query_config_is_a_400(stack, tutorial_db, query_config, words):
    client = LlamaStackClient(base_url=stack.url)
    with pytest.raises(BadRequestError) as err:
        client.tool_runtime.rag_tool.query(content="x", vector_db_ids=[tutorial_db], query_config=query_config)
    assert words in str(err.value)


def test_query_needs_a_vector_db(stack):
    client = LlamaStackClient(base_url=stack.url)
    with pytest.raises(BadRequestError, match="at least one vector DB"):
        client.tool_runtime.rag_tool.query(content="x", vector_db_ids=[])
    with pytest.raises(NotFoundError):
        client.tool_runtime.rag_tool.query(content="x", vector_db_ids=["no-such-db"])


def test_reinsert_replaces_a_document(stack, docs_url):
    client = LlamaStackClient(base_url=stack.url)
    db = new_id()
    client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
    doc = Document(document_id="doc-1", content=f"{docs_url}/chat.rst", mime_type="text/plain", metadata={"v": 1})
    client.tool_runtime.rag_tool.insert(documents=[doc], vector_db_id=db, chunk_size_in_tokens=256)
    first = client.vector_io.query(vector_db_id=db, query="chat", params={"max_chunks": 100})
    client.tool_runtime.rag_tool.insert(documents=[doc], vector_db_id=db, chunk_size_in_tokens=256)
    second = client.vector_io.query(vector_db_id=db, query="chat", params={"max_chunks": 100})
    assert len(second.chunks) == len(first.chunks) > 3
    replacement = Document(document_id="doc-1", content="Only this sentence about zebras remains.", metadata={"v": 2})
    client.tool_runtime.rag_tool.insert(documents=[replacement], vector_db_id=db, chunk_size_in_tokens=256)
    third = client.vector_io.query(vector_db_id=db, query="zebras", params={"max_chunks": 100})
    assert [c.content for c in third.chunks] == ["Only this sentence about zebras remains."]
    assert third.chunks[0].metadata["v"] == 2
    client.vector_dbs.unregister(vector_db_id=db)


def test_inline_text_data_url_and_html(stack):
    client = LlamaStackClient(base_url=stack.url)
    db = new_id()
    client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
    import base64

    html = "<html><head><title>Kiwis</title><script>var secret=1;</script></head><body><p>Kiwis are flightless birds from New Zealand.</p></body></html>"
    docs = [
        Document(document_id="inline", content="Penguins live in the southern hemisphere.", metadata={"kind": "inline"}),
        Document(document_id="data", content="data:text/plain;base64," + base64.b64encode(b"Ostriches run fast.").decode(),
                 metadata={}),
        Document(document_id="html", content={"type": "text", "text": html}, mime_type="text/html", metadata={}),
    ]
    client.tool_runtime.rag_tool.insert(documents=docs, vector_db_id=db, chunk_size_in_tokens=128)
    result = client.vector_io.query(vector_db_id=db, query="flightless birds of New Zealand", params={"max_chunks": 3})
    top = result.chunks[0]
    assert top.metadata["document_id"] == "html"
    assert "Kiwis are flightless birds" in top.content
    assert "<p>" not in top.content and "secret" not in top.content
    found = {c.metadata["document_id"]: c for c in result.chunks}
    assert set(found) == {"inline", "data", "html"}
    assert found["inline"].metadata["kind"] == "inline"
    client.vector_dbs.unregister(vector_db_id=db)


def test_a_question_the_documents_do_not_cover_gets_no_chunks(stack, tutorial_db):
    """Below the relevance threshold (retrieval.relevance_threshold) nothing is returned, rather
    than the five least unrelated chunks."""
    client = LlamaStackClient(base_url=stack.url)
    result = client.tool_runtime.rag_tool.query(content="What is the capital city of Australia?",
                                                vector_db_ids=[tutorial_db])
    assert result.content is None
    assert result.metadata["document_ids"] == []
    # On-topic in tone (cosine 0.47 to the torchtune chunks, above the threshold) but hinging on words
    # no document uses: the term-coverage check (retrieval.term_coverage) declines it.
    on_topic = client.tool_runtime.rag_tool.query(
        content="How do I deploy a torchtune model behind a FastAPI REST endpoint with autoscaling?",
        vector_db_ids=[tutorial_db])
    assert on_topic.content is None
    # A short question in the documents' own words is kept.
    short = client.tool_runtime.rag_tool.query(content="What does lora_rank set?", vector_db_ids=[tutorial_db])
    assert short.content and {"num-2", "num-3"} & set(short.metadata["document_ids"])
    # The same store still answers what it covers.
    covered = client.tool_runtime.rag_tool.query(content="How does LoRA reduce the number of trainable parameters?",
                                                 vector_db_ids=[tutorial_db])
    assert "num-3" in covered.metadata["document_ids"] and covered.content


def test_a_question_about_the_whole_collection_gets_each_documents_opening(stack, tutorial_db):
    client = LlamaStackClient(base_url=stack.url)
    result = client.tool_runtime.rag_tool.query(
        content="What are the top 5 topics that were explained? Only list succinct bullet points.",
        vector_db_ids=[tutorial_db])
    assert sorted(result.metadata["document_ids"]) == ["num-0", "num-1", "num-2", "num-3"]
    # Each is its document's opening chunk: the document's title is in it.
    titles = {"num-0": "Llama3", "num-1": "Llama3", "num-2": "Memory Optimization", "num-3": "LoRA"}
    for doc_id, chunk in zip(result.metadata["document_ids"], result.metadata["chunks"]):
        assert titles[doc_id].lower() in chunk.lower(), (doc_id, chunk[:200])


def test_an_llm_writes_the_query_when_the_config_asks(stack, tutorial_db):
    """query_generator_config {type: llm}: the chat model turns the message into the query that is
    searched (the result's closing line quotes the query searched)."""
    client = LlamaStackClient(base_url=stack.url)
    model = next(m.identifier for m in client.models.list() if m.model_type == "llm")
    question = "lora memory"
    result = client.tool_runtime.rag_tool.query(
        content=question, vector_db_ids=[tutorial_db],
        query_config={"query_generator_config": {
            "type": "llm", "model": model,
            "template": "Rewrite this as a full question about fine-tuning language models: {{ messages[-1] }}"}})
    assert result.content
    searched = re.search(r'the user\'s query: "(.*)"', result.content[-1].text, re.S).group(1)
    assert searched.strip() and searched != question
    for template, why in (("{% for m in messages %}{{ m }}{% endfor %}", "may only use"),
                          ("no field here", "must contain")):
        with pytest.raises(BadRequestError, match=why):
            client.tool_runtime.rag_tool.query(content=question, vector_db_ids=[tutorial_db], query_config={
                "query_generator_config": {"type": "llm", "model": model, "template": template}})
    with pytest.raises(NotFoundError):
        client.tool_runtime.rag_tool.query(content=question, vector_db_ids=[tutorial_db], query_config={
            "query_generator_config": {"type": "llm", "model": "no-such-model", "template": "{{ messages }}"}})
