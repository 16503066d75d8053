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
