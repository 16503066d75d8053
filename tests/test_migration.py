"""A data dir made by the last release on Milvus Lite 3 (tests/data/datadir-lite3.tar.gz, made by
tests/data/make_release_datadir.py) keeps working: at start-up its Milvus Lite 3 store is set aside
and copied into the embedded engine, once; a copy cut short starts again."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from llama_stack_client import LlamaStackClient
from openai import OpenAI

from conftest import start_server

RELEASE_DATADIR = Path(__file__).parent / "data" / "datadir-lite3.tar.gz"


def release_datadir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tarfile.open(RELEASE_DATADIR) as tar:
        tar.extractall(data_dir, filter="data")
    assert (data_dir / "milvus.db").is_dir()  # Milvus Lite 3's layout
    return data_dir


def check_contents(url: str) -> None:
    client = LlamaStackClient(base_url=url)
    ids = {d.identifier for d in client.vector_dbs.list()}
    assert "notes" in ids
    hits = client.vector_io.query(vector_db_id="notes", query="what do hedgehogs eat", params={"mode": "keyword"})
    assert hits.chunks[0].metadata["document_id"] == "hedgehog"
    hits = client.vector_io.query(vector_db_id="notes", query="animals asleep on the water",
                                  params={"mode": "vector", "max_chunks": 3})
    assert hits.chunks[0].metadata["document_id"] == "otter"
    assert {"hedgehog", "lighthouse", "otter"} <= {c.metadata["document_id"] for c in client.vector_io.query(
        vector_db_id="notes", query="lamp", params={"mode": "hybrid", "max_chunks": 10}).chunks}
    openai = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    store = next(s for s in openai.vector_stores.list() if s.name == "animals")
    found = openai.vector_stores.search(vector_store_id=store.id, query="otters holding hands")
    assert len(found.data) == 1 and "hold hands" in found.data[0].content[0].text


def test_a_release_data_dir_is_migrated_once(tmp_path):
    data_dir = release_datadir(tmp_path)
    server = start_server(data_dir, None)
    try:
        check_contents(server.url)
        client = LlamaStackClient(base_url=server.url)
        client.vector_io.insert(vector_db_id="notes", chunks=[
            {"content": "Badgers dig setts in woodland.", "metadata": {"document_id": "badger"}}])
        assert "migrated 2 collections (" in server.log_tail(200)
    finally:
        server.stop()
    assert (data_dir / "milvus.db").is_file()  # the engine's SQLite file
    marker = json.loads((data_dir / "milvus.lite3.db" / "STACKRAG_MIGRATED.json").read_text())
    assert len(marker["collections"]) == 2 and marker["collections"]["vdb_notes_ab5aa97074"] == 3
    assert not (data_dir / "milvus.db.keywords").exists()

    server = start_server(data_dir, None)
    try:
        assert "migrated" not in server.log_tail(200)
        check_contents(server.url)
        hits = LlamaStackClient(base_url=server.url).vector_io.query(
            vector_db_id="notes", query="badgers", params={"mode": "keyword"})
        assert hits.chunks[0].metadata["document_id"] == "badger"
    finally:
        server.stop()


def test_a_migration_cut_short_starts_again(tmp_path):
    """A kill during the copy leaves the store set aside without its marker and a partial engine
    file: the next start removes that file and copies everything again."""
    data_dir = release_datadir(tmp_path)
    (data_dir / "milvus.db").rename(data_dir / "milvus.lite3.db")
    (data_dir / "milvus.db").write_bytes(b"")  # what the cut-short copy had written
    server = start_server(data_dir, None)
    try:
        assert "was cut short" in server.log_tail(200)
        check_contents(server.url)
    finally:
        server.stop()
    assert (data_dir / "milvus.lite3.db" / "STACKRAG_MIGRATED.json").exists()


def test_a_backup_in_the_way_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    data_dir = release_datadir(tmp_path)
    (data_dir / "milvus.lite3.db").mkdir()
    done = subprocess.run([sys.executable, "-m", "stackrag.cli", "run", "--port", "1", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "exists already: move one of them away" in done.stderr and "Traceback" not in done.stderr
    assert (data_dir / "milvus.db").is_dir()  # untouched
