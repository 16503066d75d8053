"""Remote Milvus going away: requests get a clear 503 in bounded time, the server stays up, and
service resumes when Milvus is back, without restarting stackrag."""

from __future__ import annotations

import time

from conftest import new_id, remote_vector_io, start_server, write_config
from milvus_servers import free_port, lite_server


def test_milvus_down_gives_503_then_recovers(tmp_path):
    port = free_port()
    milvus_dir = tmp_path / "milvus"
    db = new_id("outage")
    with lite_server(milvus_dir, port) as uri:
        config = write_config(tmp_path / "run.yaml", remote_vector_io(uri))
        server = start_server(tmp_path / "data", config)
        http = server.client()
        http.post("/v1/vector-dbs", json={"vector_db_id": db, "embedding_model": "all-MiniLM-L6-v2"}).raise_for_status()
        http.post("/v1/vector-io/insert", json={"vector_db_id": db, "chunks": [
            {"content": "Milvus keeps the vectors.", "metadata": {"document_id": "m"}}]}).raise_for_status()
    try:
        started = time.monotonic()
        r = http.post("/v1/vector-io/query", json={"vector_db_id": db, "query": "vectors"})
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert "unreachable" in r.json()["detail"] and uri.split("//")[1] in r.json()["detail"]
        assert elapsed < 30
        assert http.get("/v1/health").status_code == 200
        providers = http.get("/v1/providers").json()["data"]
        assert next(p for p in providers if p["provider_id"] == "milvus")["health"]["status"] == "Error"

        with lite_server(milvus_dir, port):
            deadline = time.monotonic() + 15  # resumes within seconds, without restarting stackrag
            while True:
                r = http.post("/v1/vector-io/query", json={"vector_db_id": db, "query": "vectors"})
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert r.status_code == 200, r.text
            assert r.json()["chunks"][0]["content"] == "Milvus keeps the vectors."
    finally:
        http.close()
        server.stop()


def test_embedded_engine_killed_gives_503_then_is_restarted(tmp_path):
    """The embedded engine is a child of stackrag: killed, it is restarted within seconds; meanwhile
    requests get a 503 saying so. A write the death cut short is removed once the engine is back
    (without a restart of stackrag): the document is whole or absent."""
    import os
    import signal
    import threading

    import httpx
    import numpy as np

    from conftest import inline_vector_io
    from test_persistence import engine_pid

    server = start_server(tmp_path / "data", write_config(tmp_path / "run.yaml", inline_vector_io()))
    http = server.client()
    db = new_id("engine")
    rng = np.random.default_rng(3)

    def chunks(doc: str, n: int) -> list[dict]:
        return [{"content": f"{doc} part {i}", "metadata": {"document_id": doc},
                 "embedding": rng.standard_normal(384).astype(np.float32).tolist()} for i in range(n)]

    def chunk_count() -> int:
        listed = http.get("/v1/vector-dbs", params={"chunk_counts": "true"}).json()["data"]
        return next(d for d in listed if d["identifier"] == db)["chunk_count"]

    try:
        http.post("/v1/vector-dbs", json={"vector_db_id": db, "embedding_model": "all-MiniLM-L6-v2"}).raise_for_status()
        http.post("/v1/vector-io/insert", json={"vector_db_id": db, "chunks": [
            {"content": "Milvus keeps the vectors.", "metadata": {"document_id": "m"}}]}).raise_for_status()
        first = engine_pid(server)
        os.kill(first, signal.SIGKILL)
        r = http.post("/v1/vector-io/query", json={"vector_db_id": db, "query": "vectors"})
        assert r.status_code == 503, r.text
        assert "restarted" in r.json()["detail"] or "unreachable" in r.json()["detail"]
        deadline = time.monotonic() + 15
        while (r := http.post("/v1/vector-io/query", json={"vector_db_id": db, "query": "vectors"})).status_code != 200:
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.json()["chunks"][0]["content"] == "Milvus keeps the vectors."
        assert engine_pid(server) != first

        # A large write (three Milvus inserts) cut by the engine's death.
        result: dict = {}
        sender = threading.Thread(target=lambda: result.update(r=httpx.post(
            f"{server.url}/v1/vector-io/insert", json={"vector_db_id": db, "chunks": chunks("big", 2500)},
            timeout=120)))
        sender.start()
        time.sleep(1.0)
        os.kill(engine_pid(server), signal.SIGKILL)
        sender.join()
        assert result["r"].status_code in (200, 503), result["r"].text
        deadline = time.monotonic() + 30
        while True:
            try:
                count = chunk_count()
                break
            except (KeyError, StopIteration, TypeError):
                assert time.monotonic() < deadline
                time.sleep(0.3)
        assert count == (2501 if result["r"].status_code == 200 else 1)
    finally:
        http.close()
        server.stop()
