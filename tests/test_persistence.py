"""What is registered survives a restart: list, query and insert work on the old vector DBs
(Llama Stack loses them). Each test runs its own server so it can stop and start it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from llama_stack_client import LlamaStackClient

from conftest import inline_vector_io, new_id, remote_vector_io, start_server, write_config


@pytest.fixture(params=["inline", "remote"])
def config_for(request, tmp_path):
    def make(data_dir):
        if request.param == "inline":
            return write_config(data_dir / "run.yaml", inline_vector_io())
        return write_config(data_dir / "run.yaml", remote_vector_io(request.getfixturevalue("lite_uri")))

    def milvus(data_dir, code: str, **values) -> object:
        """Run `code` against the server's Milvus in a process of its own (the embedded engine's
        db_path is locked by the process that runs it), with `index` (a MilvusIndex) and `values`
        defined; it sets `result`, which comes back through JSON."""
        if request.param == "inline":
            args = ("inline::milvus", {"db_path": str(data_dir / "milvus.db")})
        else:
            args = ("remote::milvus", {"uri": request.getfixturevalue("lite_uri")})
        script = (
            "import json, sys\n"
            "from pathlib import Path\n"
            "from stackrag.providers.vector_io.milvus import MilvusIndex\n"
            "kind, config, data, values = json.loads(sys.argv[1])\n"
            "index = MilvusIndex('m', kind, config, Path(data))\n"
            "globals().update(values)\n"
            "result = None\n" + code + "\n"
            "index.close()\n"
            "print(json.dumps(result))\n"
        )
        done = subprocess.run([sys.executable, "-c", script, json.dumps([*args, str(data_dir), values])],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def count_rows(data_dir, vector_db_id: str, document_id: str) -> int:
        return milvus(data_dir, (
            "index.load(name)\n"
            "rows = index._call(lambda c: c.query(name, filter=f'document_id == \"{doc}\"', output_fields=['count(*)']))\n"
            "result = rows[0]['count(*)']"), name=collection(data_dir, vector_db_id), doc=document_id)

    make.count_rows = count_rows
    make.milvus = milvus
    make.collection = collection
    return make


def collection(data_dir, vector_db_id: str, namespace: str = "vector_dbs") -> str:
    """The Milvus collection the registry gives a vector DB (each registration a name of its own)."""
    import sqlite3

    with sqlite3.connect(data_dir / "registry.db") as registry:
        row = registry.execute("SELECT value FROM records WHERE namespace = ? AND key = ?",
                               (namespace, vector_db_id)).fetchone()
    return json.loads(row[0])["collection"]


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
    """`stackrag run` with nothing but a data dir: the embedded Milvus engine and MiniLM under that dir."""
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
    """The embedded engine keeps rows and BM25 statistics in its data file: after a clean stop or a
    SIGKILL of stackrag (its engine then stops by itself: the lock it watches is gone), keyword search
    finds the same rows at once, and later inserts and deletes are searched too."""
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
        engine = engine_pid(server)
    finally:
        if how == "kill":
            server.process.kill()
            server.process.wait()
        server.stop()
    assert_exits(engine)

    server = start_server(data_dir, config)
    try:
        client = LlamaStackClient(base_url=server.url)
        keyword = {"mode": "keyword", "max_chunks": 5}
        hits = client.vector_io.query(vector_db_id=db, query="hedgehogs", params=keyword)
        assert [c.metadata["document_id"] for c in hits.chunks] == ["hedgehog"]
        client.vector_io.insert(vector_db_id=db, chunks=[
            {"content": "Hedgehogs hibernate in winter.", "metadata": {"document_id": "winter"}}])
        hits = client.vector_io.query(vector_db_id=db, query="hedgehogs", params=keyword)
        assert sorted(c.metadata["document_id"] for c in hits.chunks) == ["hedgehog", "winter"]
        hits = client.vector_io.query(vector_db_id=db, query="lighthouse", params=keyword)
        assert len(hits.chunks) == 3
    finally:
        server.stop()


def engine_pid(server) -> int:
    """The pid of a server's embedded engine, as its health says."""
    import re

    import httpx

    providers = httpx.get(f"{server.url}/v1/providers", timeout=30).json()["data"]
    message = next(p for p in providers if p["provider_id"] == "milvus")["health"]["message"]
    return int(re.search(r"embedded C\+\+ engine, pid (\d+)", message).group(1))


def assert_exits(pid: int, within: float = 15.0) -> None:
    import os
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the engine (pid {pid}) outlived its server by {within} s")


def test_a_second_server_on_the_same_db_path_is_refused(tmp_path):
    """One stackrag per db_path: the second gets a clear error naming the path and the holder, and
    the first keeps serving."""
    data_dir = tmp_path / "data"
    config = write_config(tmp_path / "run.yaml", inline_vector_io())
    first = start_server(data_dir, config)
    try:
        second = subprocess.run([sys.executable, "-m", "stackrag.cli", "run", "--port", "1", "--data-dir",
                                 str(data_dir), "--config", str(config)], capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert f"{data_dir / 'milvus.db'} is in use by another process (pid {first.process.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        assert LlamaStackClient(base_url=first.url).vector_dbs.list() is not None
    finally:
        first.stop()


def test_a_server_killed_during_ingestion_restarts_consistent(tmp_path, config_for):
    """kill -9 while a large document is being written (several Milvus inserts): after the restart
    that document is whole or absent, the others are untouched, and inserting it again gives
    exactly one copy."""
    import sqlite3
    import threading
    import time

    import httpx
    import numpy as np

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = config_for(data_dir)
    rng = np.random.default_rng(7)

    def chunks(doc: str, n: int) -> list[dict]:
        vectors = rng.standard_normal((n, 384)).astype(np.float32)
        return [{"content": f"{doc} part {i}", "metadata": {"document_id": doc}, "embedding": v.tolist()}
                for i, v in enumerate(vectors)]

    big = chunks("big", 2500)  # three Milvus insert calls of 1,000 rows
    db = new_id("kill")
    server = start_server(data_dir, config)
    try:
        client = LlamaStackClient(base_url=server.url)
        client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
        client.vector_io.insert(vector_db_id=db, chunks=chunks("small", 40))

        def insert_big() -> None:
            try:
                httpx.post(f"{server.url}/v1/vector-io/insert", json={"vector_db_id": db, "chunks": big}, timeout=120)
            except httpx.HTTPError:
                pass  # the server dies under it

        sender = threading.Thread(target=insert_big)
        sender.start()
        # The write's journal entry appears in the registry when the Milvus inserts begin.
        registry = sqlite3.connect(f"file:{data_dir / 'registry.db'}?mode=ro", uri=True, timeout=5)
        deadline = time.monotonic() + 60
        while not registry.execute("SELECT count(*) FROM records WHERE namespace = 'ingests'").fetchone()[0]:
            assert time.monotonic() < deadline, "the insert never started writing"
            time.sleep(0.01)
        registry.close()
        time.sleep(0.2)
        server.process.kill()
        server.process.wait()
        sender.join()
    finally:
        server.stop()

    # The restart removes what the killed write left (Stack.startup -> Ingestion.recover).
    server = start_server(data_dir, config)
    try:
        assert db in [d.identifier for d in LlamaStackClient(base_url=server.url).vector_dbs.list()]
    finally:
        server.stop()

    def count(document_id: str) -> int:
        return config_for.count_rows(data_dir, db, document_id)

    assert count("small") == 40
    assert count("big") in (0, 2500)
    with sqlite3.connect(data_dir / "registry.db") as registry:
        assert registry.execute("SELECT count(*) FROM records WHERE namespace = 'ingests'").fetchone()[0] == 0

    server = start_server(data_dir, config)
    try:
        LlamaStackClient(base_url=server.url).vector_io.insert(vector_db_id=db, chunks=big)
    finally:
        server.stop()
    assert count("big") == 2500 and count("small") == 40


def test_start_up_makes_milvus_match_the_registry(tmp_path, config_for):
    """What a kill between the steps of a register or an unregister leaves, made by hand: a registered
    vector DB without its collection (re-created empty, usable), and an unregister journalled but not
    yet dropped in Milvus (finished: the collection goes). Other collections on the Milvus are left."""
    import sqlite3

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = config_for(data_dir)
    kept, lost, ghost = new_id("kept"), new_id("lost"), new_id("ghost")
    server = start_server(data_dir, config)
    try:
        client = LlamaStackClient(base_url=server.url)
        for db in (kept, lost, ghost):
            client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
        client.vector_io.insert(vector_db_id=kept, chunks=[
            {"content": "The lighthouse keeper lit the lamp at dusk.", "metadata": {"document_id": "a"}}])
    finally:
        server.stop()
    names = {db: collection(data_dir, db) for db in (kept, lost, ghost)}
    collections = "result = sorted(x for x in names if index.exists(x))"
    config_for.milvus(data_dir, "index.drop(name)", name=names[lost])
    with sqlite3.connect(data_dir / "registry.db") as registry:  # the unregister's first two steps
        registry.execute("UPDATE records SET namespace = 'vector_db_drops' WHERE namespace = 'vector_dbs' "
                         "AND key = ?", (ghost,))

    server = start_server(data_dir, config)
    try:
        client = LlamaStackClient(base_url=server.url)
        listed = {d.identifier for d in client.vector_dbs.list()}
        assert {kept, lost} <= listed and ghost not in listed
        assert client.vector_io.query(vector_db_id=kept, query="lamp").chunks[0].metadata["document_id"] == "a"
        assert client.vector_io.query(vector_db_id=lost, query="lamp").chunks == []
        client.vector_io.insert(vector_db_id=lost, chunks=[
            {"content": "Fog horns sound in the mist.", "metadata": {"document_id": "b"}}])
        assert client.vector_io.query(vector_db_id=lost, query="fog").chunks[0].metadata["document_id"] == "b"
        assert "finishing its unregister" in server.log_tail(200)
    finally:
        server.stop()
    assert config_for.milvus(data_dir, collections, names=list(names.values())) == sorted([names[kept], names[lost]])
    with sqlite3.connect(data_dir / "registry.db") as registry:
        assert registry.execute("SELECT count(*) FROM records WHERE namespace = 'vector_db_drops'").fetchone()[0] == 0


def test_files_left_in_progress_without_a_job_are_ingested_at_start(tmp_path):
    """A vector-store file still in_progress with no job behind it (attached by a version before the
    job table, whose server stopped mid-way) is queued again at start-up and ends completed."""
    import sqlite3

    from openai import OpenAI

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = write_config(data_dir / "run.yaml", inline_vector_io())
    server = start_server(data_dir, config)
    try:
        openai = OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        store = openai.vector_stores.create(name="stuck")
        file = openai.files.create(file=("otters.txt", b"Otters hold hands while they sleep."), purpose="assistants")
        openai.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=file.id)
    finally:
        server.stop()
    with sqlite3.connect(data_dir / "registry.db") as registry:
        key = f"{store.id}/{file.id}"
        (value,) = registry.execute("SELECT value FROM records WHERE namespace = 'vector_store_files' AND key = ?",
                                    (key,)).fetchone()
        entry = json.loads(value)
        entry["status"] = "in_progress"
        registry.execute("UPDATE records SET value = ? WHERE namespace = 'vector_store_files' AND key = ?",
                         (json.dumps(entry), key))
        assert registry.execute("SELECT count(*) FROM records WHERE namespace = 'jobs'").fetchone()[0] == 0

    server = start_server(data_dir, config)
    try:
        openai = OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        import time

        deadline = time.monotonic() + 60
        while (status := openai.vector_stores.files.retrieve(file.id, vector_store_id=store.id).status) == "in_progress":
            assert time.monotonic() < deadline, "the stuck file was never ingested"
            time.sleep(0.2)
        assert status == "completed"
        hits = openai.vector_stores.search(vector_store_id=store.id, query="otters sleeping")
        assert len(hits.data) == 1
    finally:
        server.stop()
