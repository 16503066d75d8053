"""The OpenAI-compatible surface with the `openai` SDK: files, vector stores (attach, status,
search with attribute filters), chat completions, embeddings, models; the classic and the
OpenAI views share one store."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from llama_stack_client import LlamaStackClient
from openai import BadRequestError, NotFoundError, OpenAI

from conftest import TUTORIAL_DOCS, TUTORIAL_FILES, new_id, start_example_server

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
ATTRIBUTES = {
    "chat.rst": {"topic": "chat", "year": 2024},
    "llama3.rst": {"topic": "models", "year": 2024},
    "memory_optimizations.rst": {"topic": "memory", "year": 2025},
    "lora_finetune.rst": {"topic": "lora", "year": 2023},
}


def wait_completed(client: OpenAI, store_id: str, file_id: str, timeout: float = 300) -> object:
    deadline = time.monotonic() + timeout
    while True:
        entry = client.vector_stores.files.retrieve(file_id=file_id, vector_store_id=store_id)
        if entry.status != "in_progress" or time.monotonic() > deadline:
            return entry
        time.sleep(0.3)


@pytest.fixture(scope="module")
def store(oai):
    uploaded = {}
    for name in TUTORIAL_FILES:
        with open(TUTORIAL_DOCS / name, "rb") as f:
            uploaded[name] = oai.files.create(file=(name, f, "text/x-rst"), purpose="assistants")
    vs = oai.vector_stores.create(name="tutorials", metadata={"team": "docs"})
    for name, file in uploaded.items():
        oai.vector_stores.files.create(vector_store_id=vs.id, file_id=file.id, attributes=ATTRIBUTES[name])
    for file in uploaded.values():
        assert wait_completed(oai, vs.id, file.id).status == "completed"
    return vs, uploaded


def test_files_upload_list_content_delete(oai):
    created = oai.files.create(file=("note.txt", b"Otters hold hands while sleeping.", "text/plain"),
                               purpose="assistants")
    assert created.id.startswith("file-") and created.bytes == 33 and created.filename == "note.txt"
    assert oai.files.retrieve(created.id).filename == "note.txt"
    assert oai.files.content(created.id).read() == b"Otters hold hands while sleeping."
    other = oai.files.create(file=("other.txt", b"Second file.", "text/plain"), purpose="assistants")
    ids = [f.id for f in oai.files.list(limit=100)]
    assert created.id in ids and other.id in ids
    first = oai.files.list(limit=1)
    assert len(first.data) == 1 and first.has_more
    second = oai.files.list(limit=1, after=first.data[0].id)
    assert second.data[0].id != first.data[0].id
    assert oai.files.delete(created.id).deleted
    with pytest.raises(NotFoundError):
        oai.files.retrieve(created.id)
    with pytest.raises(BadRequestError, match="purpose"):
        oai.files.create(file=("x.txt", b"x", "text/plain"), purpose="nonsense")


def test_files_and_vector_stores_expire_after(oai):
    """expires_after as OpenAI (and Llama Stack 0.8's files tests) send it: bracketed form fields
    for a file, {anchor: last_active_at, days} for a store."""
    uploaded = oai.files.create(file=("expiring.txt", b"expires_after test", "text/plain"), purpose="assistants",
                                expires_after={"anchor": "created_at", "seconds": 4545})
    assert uploaded.expires_at == uploaded.created_at + 4545
    assert oai.files.retrieve(uploaded.id).expires_at == uploaded.expires_at
    assert uploaded.id in [f.id for f in oai.files.list(limit=100)]
    for bad, why in (({"anchor": "created_at", "seconds": 10}, "between 3600"),
                     ({"anchor": "last_active_at", "seconds": 4545}, "anchor")):
        with pytest.raises(BadRequestError, match=why):
            oai.files.create(file=("x.txt", b"x", "text/plain"), purpose="assistants", expires_after=bad)
    store = oai.vector_stores.create(name="expiring", expires_after={"anchor": "last_active_at", "days": 2})
    assert store.expires_after.days == 2 and store.status == "completed"
    assert store.expires_at == store.last_active_at + 2 * 86_400
    updated = oai.vector_stores.update(vector_store_id=store.id, expires_after={"anchor": "last_active_at", "days": 7})
    assert updated.expires_at == updated.last_active_at + 7 * 86_400
    with pytest.raises(BadRequestError, match="days"):
        oai.vector_stores.create(name="x", expires_after={"anchor": "last_active_at", "days": 0})
    oai.vector_stores.delete(store.id)
    oai.files.delete(uploaded.id)


def test_an_expired_file_is_gone(tmp_path, monkeypatch):
    """Past its expires_at a file is not found and not listed, before the sweep deletes it, and the
    sweep finds it (the server's own FileService on a real registry and blob store)."""
    import time

    from stackrag.errors import NotFound
    from stackrag.services.files import FileService
    from stackrag.storage.blobs import BlobStore
    from stackrag.storage.registry import SQLiteRegistry

    files = FileService(SQLiteRegistry(tmp_path / "registry.db"), BlobStore(tmp_path / "blobs"), 1 << 20)
    kept = files.create("kept.txt", b"kept", "assistants", "text/plain")
    expiring = files.create("expiring.txt", b"soon gone", "assistants", "text/plain", 3600)
    assert files.get(expiring["id"]) and files.expired() == []
    later = time.time() + 3601
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(NotFound, match="not found"):
        files.get(expiring["id"])
    assert [f["id"] for f in files.list()] == [kept["id"]]
    assert files.expired() == [expiring["id"]]
    files.remove(expiring["id"])
    assert files.expired() == []


def test_vector_store_attach_and_status(oai, store):
    vs, uploaded = store
    current = oai.vector_stores.retrieve(vs.id)
    assert current.name == "tutorials" and current.metadata == {"team": "docs"}
    assert current.file_counts.completed == 4 and current.file_counts.total == 4
    assert current.usage_bytes == sum(f.bytes for f in uploaded.values())
    entry = oai.vector_stores.files.retrieve(file_id=uploaded["chat.rst"].id, vector_store_id=vs.id)
    assert entry.attributes == {"topic": "chat", "year": 2024} and entry.last_error is None
    listed = oai.vector_stores.files.list(vector_store_id=vs.id)
    assert {f.id for f in listed} == {f.id for f in uploaded.values()}
    content = oai.vector_stores.files.content(file_id=uploaded["llama3.rst"].id, vector_store_id=vs.id)
    assert "Llama3" in "".join(part.text for part in content)


def test_search_with_and_without_filters(oai, store):
    vs, uploaded = store
    results = oai.vector_stores.search(vector_store_id=vs.id, query="activation checkpointing saves memory",
                                       max_num_results=3)
    top = results.data[0]
    assert top.file_id == uploaded["memory_optimizations.rst"].id
    assert top.filename == "memory_optimizations.rst" and top.attributes["topic"] == "memory"
    assert 0 < top.score <= 1 and top.content[0].type == "text" and top.content[0].text
    filtered = oai.vector_stores.search(vector_store_id=vs.id, query="activation checkpointing saves memory",
                                        filters={"type": "eq", "key": "topic", "value": "lora"})
    assert filtered.data and {r.file_id for r in filtered.data} == {uploaded["lora_finetune.rst"].id}
    compound = oai.vector_stores.search(
        vector_store_id=vs.id, query="fine-tuning",
        filters={"type": "and", "filters": [{"type": "gte", "key": "year", "value": 2024},
                                            {"type": "nin", "key": "topic", "value": ["memory"]}]},
        max_num_results=20,
    )
    assert {r.attributes["topic"] for r in compound.data} <= {"chat", "models"}
    strict = oai.vector_stores.search(vector_store_id=vs.id, query="fine-tuning",
                                      ranking_options={"score_threshold": 0.99})
    assert strict.data == []
    with pytest.raises(BadRequestError, match="filters.type"):
        oai.vector_stores.search(vector_store_id=vs.id, query="x", filters={"type": "like", "key": "a", "value": 1})
    # Llama Stack 0.8's spelling of the fusion: named ranker with alpha / impact_factor, or weights.
    url = f"{str(oai.base_url).rstrip('/')}/vector_stores/{vs.id}/search"
    for options in ({"ranker": "weighted", "alpha": 1.0}, {"ranker": "rrf", "impact_factor": 10},
                    {"weights": {"vector": 0.5, "keyword": 0.5}}):
        r = httpx.post(url, json={"query": "activation checkpointing saves memory", "ranking_options": options})
        assert r.status_code == 200 and r.json()["data"], (options, r.text)
    vector_only = httpx.post(url, json={"query": "activation checkpointing saves memory",
                                        "ranking_options": {"ranker": "weighted", "alpha": 1.0}}).json()["data"]
    # alpha 1 is the dense leg alone: the scores are its (1 + cosine) / 2, best first.
    assert all(0.5 <= d["score"] <= 1.0 for d in vector_only)
    for options, why in (({"ranker": "neural", "model": "x"}, "reranker model"),
                         ({"weights": {"vector": 0.5, "keyword": 0.2}}, "sum to 1")):
        r = httpx.post(url, json={"query": "x", "ranking_options": options})
        assert r.status_code == 400 and why in r.text, r.text
    # As in the reference, rewriting needs a model named in the run config; this server has none.
    with pytest.raises(BadRequestError, match="retrieval.rewrite_query.model"):
        oai.vector_stores.search(vector_store_id=vs.id, query="x", rewrite_query=True)
    with pytest.raises(NotFoundError):
        oai.vector_stores.search(vector_store_id="vs_missing", query="x")


def test_one_store_two_apis(agent_stack, oai, store):
    vs, _ = store
    classic = LlamaStackClient(base_url=agent_stack.url)
    assert vs.id in [d.identifier for d in classic.vector_dbs.list()]
    hits = classic.vector_io.query(vector_db_id=vs.id, query="LoRA rank", params={"max_chunks": 2})
    assert hits.chunks and hits.chunks[0].metadata["filename"].endswith(".rst")
    db = new_id("classic")
    classic.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
    classic.vector_io.insert(vector_db_id=db, chunks=[{"content": "Koalas sleep 20 hours.",
                                                        "metadata": {"document_id": "koala"}}])
    assert oai.vector_stores.retrieve(db).id == db
    found = oai.vector_stores.search(vector_store_id=db, query="How long do koalas sleep?")
    assert found.data[0].file_id == "koala" and "Koalas" in found.data[0].content[0].text
    assert oai.vector_stores.delete(db).deleted
    assert db not in [d.identifier for d in classic.vector_dbs.list()]


def test_failed_file_says_why(oai):
    bad = oai.files.create(file=("scan.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png"), purpose="assistants")
    vs = oai.vector_stores.create(name="bad")
    # A small file's attach answers with its final status (as Llama Stack's does), failed included.
    entry = oai.vector_stores.files.create(vector_store_id=vs.id, file_id=bad.id)
    assert entry.status == "failed" and "not supported" in entry.last_error.message
    assert oai.vector_stores.retrieve(vs.id).file_counts.failed == 1
    # Of several files, an unknown one fails on its own and says so; the others are still ingested.
    with pytest.raises(NotFoundError):
        oai.vector_stores.files.create(vector_store_id=vs.id, file_id="file-nope")
    good = oai.files.create(file=("ok.txt", b"Kestrels hover before they dive.", "text/plain"), purpose="assistants")
    mixed = oai.vector_stores.create(name="mixed", file_ids=[good.id, "file-nope"])
    assert (mixed.file_counts.completed, mixed.file_counts.failed, mixed.file_counts.total) == (1, 1, 2)
    missing = oai.vector_stores.files.retrieve(file_id="file-nope", vector_store_id=mixed.id)
    assert missing.status == "failed" and "not found" in missing.last_error.message


def test_chat_completions_and_embeddings(oai):
    reply = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Reply with: pong"}],
                                        max_tokens=8)
    assert "pong" in reply.choices[0].message.content.lower() and reply.choices[0].finish_reason in ("stop", "length")
    stream = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count from 1 to 5."}],
                                         max_tokens=32, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert "3" in text
    vectors = oai.embeddings.create(model="all-MiniLM-L6-v2", input=["hello", "world"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
    assert MODEL in [m.id for m in oai.models.list()]


def test_files_and_stores_survive_a_restart(tmp_path, models_dir):
    server = start_example_server(tmp_path / "data", models_dir)
    try:
        client = OpenAI(base_url=f"{server.url}/v1/openai/v1", api_key="unused")
        file = client.files.create(file=("fox.txt", b"The quick brown fox jumps over the lazy dog.", "text/plain"),
                                   purpose="assistants")
        vs = client.vector_stores.create(name="kept", file_ids=[file.id])
        assert wait_completed(client, vs.id, file.id).status == "completed"
    finally:
        server.stop()
    server = start_example_server(tmp_path / "data", models_dir)
    try:
        client = OpenAI(base_url=f"{server.url}/v1/openai/v1", api_key="unused")
        assert client.files.retrieve(file.id).filename == "fox.txt"
        assert client.vector_stores.retrieve(vs.id).file_counts.completed == 1
        assert client.vector_stores.files.retrieve(file_id=file.id, vector_store_id=vs.id).status == "completed"
        hits = client.vector_stores.search(vector_store_id=vs.id, query="fox jumping")
        assert hits.data[0].file_id == file.id
    finally:
        server.stop()


def test_responses_with_file_search_cite_the_file(oai, store):
    vs, uploaded = store
    response = oai.responses.create(
        model=MODEL, input="What attention mechanism does Llama3-8B use?", instructions="Answer briefly.",
        tools=[{"type": "file_search", "vector_store_ids": [vs.id], "max_num_results": 5}],
        include=["file_search_call.results"],
    )
    assert response.status == "completed"
    call, message = response.output
    assert call.type == "file_search_call" and call.status == "completed"
    assert call.results and call.results[0].file_id == uploaded["llama3.rst"].id
    assert "grouped" in response.output_text.lower() or "gqa" in response.output_text.lower()
    cited = [a.file_id for a in message.content[0].annotations]
    assert cited[0] == uploaded["llama3.rst"].id
    assert oai.responses.retrieve(response.id).output_text == response.output_text


def test_responses_stream_events_and_follow_ups(oai, store):
    vs, _ = store
    stream = oai.responses.create(model=MODEL, input="How does activation checkpointing save memory?",
                                  tools=[{"type": "file_search", "vector_store_ids": [vs.id]}], stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    order = ["response.file_search_call.in_progress", "response.file_search_call.searching",
             "response.file_search_call.completed", "response.output_text.delta", "response.output_text.done"]
    positions = [kinds.index(k) for k in order]
    assert positions == sorted(positions)
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    first = events[-1].response
    follow = oai.responses.create(model=MODEL, previous_response_id=first.id,
                                  input="Repeat the first word of your previous answer.")
    assert follow.previous_response_id == first.id and follow.output_text

    conversation = oai.conversations.create(metadata={"name": "chat"})
    oai.responses.create(model=MODEL, conversation=conversation.id, input="My cat is called Miso. Say OK.")
    second = oai.responses.create(model=MODEL, conversation=conversation.id,
                                  input="What is my cat called? One word.")
    assert "miso" in second.output_text.lower()
    items = oai.conversations.items.list(conversation_id=conversation.id)
    assert [i.role for i in items.data] == ["user", "assistant", "user", "assistant"]


def test_llama_stack_client_07_on_python_312(agent_stack, client07_python):
    """The current llama-stack client (0.7.x needs Python >= 3.12) through its own resources."""
    import json
    import subprocess

    script = Path(__file__).parent / "clients" / "llama_stack_07_flow.py"
    done = subprocess.run([str(client07_python), str(script), agent_stack.url, str(TUTORIAL_DOCS), MODEL],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["statuses"].values()) == {"completed"}
    assert result["top_file"] == result["files"]["lora_finetune.rst"]
    assert result["output_types"] == ["file_search_call", "message"]
    assert "grouped" in result["answer"].lower() or "gqa" in result["answer"].lower()


def test_file_batches(oai):
    vs = oai.vector_stores.create(name="batch")
    files = [oai.files.create(file=(f"b{i}.txt", f"Batch file number {i} about herons.".encode(), "text/plain"),
                              purpose="assistants") for i in range(2)]
    batch = oai.vector_stores.file_batches.create(vector_store_id=vs.id, file_ids=[f.id for f in files],
                                                  attributes={"kind": "batch"})
    assert batch.id.startswith("vsfb_") and batch.object == "vector_store.file_batch"
    # Small files are ingested before the batch is answered.
    assert batch.status == "completed" and batch.file_counts.completed == batch.file_counts.total == 2
    done = oai.vector_stores.file_batches.retrieve(batch_id=batch.id, vector_store_id=vs.id)
    assert done.status == "completed" and done.file_counts.completed == 2
    listed = oai.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=vs.id)
    assert {f.id for f in listed} == {f.id for f in files}
    assert all(f.attributes == {"kind": "batch"} for f in listed)
    with pytest.raises(NotFoundError):
        oai.vector_stores.file_batches.retrieve(batch_id="vsfb_nope", vector_store_id=vs.id)


def test_contextual_chunking(oai):
    """Llama Stack's contextual chunking with the local model: each chunk is stored as the context
    line the model wrote, a blank line, then the chunk's own text."""
    text = ("# Lighthouses of the north coast\n\n## Keepers\n\nThe keepers trimmed the wicks at dusk and "
            "wound the clockwork that turned the lens every four hours.\n\n## Fog\n\nIn fog the station "
            "sounded a horn twice a minute, powered by compressed air from an engine house.\n")
    file = oai.files.create(file=("lights.md", text.encode(), "text/markdown"), purpose="assistants")
    sizes = {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}
    static_store, contextual_store = oai.vector_stores.create(name="static"), oai.vector_stores.create(name="ctx")
    assert oai.vector_stores.files.create(vector_store_id=static_store.id, file_id=file.id, chunking_strategy={
        "type": "static", "static": sizes}).status == "completed"
    entry = oai.vector_stores.files.create(vector_store_id=contextual_store.id, file_id=file.id, chunking_strategy={
        "type": "contextual", "contextual": {**sizes, "model_id": MODEL}})
    assert entry.status == "completed", entry.last_error
    assert entry.chunking_strategy.type == "contextual"
    static = [c.text for c in oai.vector_stores.files.content(vector_store_id=static_store.id, file_id=file.id).data]
    contextual = [c.text for c in
                  oai.vector_stores.files.content(vector_store_id=contextual_store.id, file_id=file.id).data]
    assert len(static) == len(contextual) > 0
    for plain, situated in zip(static, contextual):
        assert situated.endswith(plain) and len(situated) > len(plain) + 2 and "\n\n" in situated
    # Without a model it is refused at once, saying what is missing; the attachment is left as it was.
    with pytest.raises(BadRequestError, match="model_id"):
        oai.vector_stores.files.create(vector_store_id=static_store.id, file_id=file.id, chunking_strategy={
            "type": "contextual", "contextual": sizes})
    kept = oai.vector_stores.files.retrieve(file_id=file.id, vector_store_id=static_store.id)
    assert kept.chunking_strategy.type == "static" and kept.status == "completed"
    with pytest.raises(BadRequestError, match="WHOLE_DOCUMENT"):
        oai.vector_stores.files.create(vector_store_id=static_store.id, file_id=file.id, chunking_strategy={
            "type": "contextual", "contextual": {**sizes, "model_id": MODEL, "context_prompt": "Describe {{CHUNK_CONTENT}}"}})


def test_file_contents_with_embeddings_and_metadata(agent_stack, oai, store):
    """Llama Stack's extra query of files.content: include_embeddings / include_metadata; the fields are
    there either way (null when not asked for)."""
    vs, uploaded = store
    file_id = uploaded["chat.rst"].id
    plain = oai.vector_stores.files.content(vector_store_id=vs.id, file_id=file_id).data
    full = oai.vector_stores.files.content(vector_store_id=vs.id, file_id=file_id,
                                           extra_query={"include_embeddings": True, "include_metadata": True}).data
    assert len(plain) == len(full) > 1
    assert [p.text for p in plain] == [f.text for f in full]
    as_dicts = [p.model_dump() for p in plain]
    assert all(d["embedding"] is None and d["metadata"] is None for d in as_dicts)
    first = full[0].model_dump()
    assert len(first["embedding"]) == 384 and abs(sum(x * x for x in first["embedding"]) - 1) < 1e-3
    assert first["chunk_metadata"]["document_id"] == file_id and first["chunk_metadata"]["chunk_id"]
    assert first["metadata"]["topic"] == "chat"
