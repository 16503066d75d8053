"""Fills a running stackrag (by URL) with what tests/test_migration.py expects to find again: how
tests/data/datadir-lite3.tar.gz was made, by the last release on Milvus Lite 3 (commit 258d819):

    git archive 258d819 | tar -x -C /tmp/release
    cd /tmp/release && python -m stackrag.cli run --port 8399 --data-dir /tmp/release-data &
    python tests/data/make_release_datadir.py http://127.0.0.1:8399
    kill %1; tar -czf tests/data/datadir-lite3.tar.gz -C /tmp/release-data registry.db milvus.db milvus.db.keywords files
"""

from __future__ import annotations

import sys

import httpx

DOCUMENTS = {
    "lighthouse": "The lighthouse keeper lit the lamp at dusk and wound the clockwork every four hours. "
                  "Fog horns sounded whenever the mist rolled in from the sea.",
    "hedgehog": "Hedgehogs eat beetles, caterpillars and earthworms. In winter they hibernate in nests "
                "of leaves under hedges.",
    "otter": "Sea otters hold hands while they sleep so that they do not drift apart. They use stones "
             "to crack open shellfish.",
}


def main(url: str) -> None:
    with httpx.Client(base_url=url, timeout=120) as http:
        http.post("/v1/vector-dbs", json={"vector_db_id": "notes", "embedding_model": "all-MiniLM-L6-v2"}
                  ).raise_for_status()
        http.post("/v1/tool-runtime/rag-tool/insert", json={
            "vector_db_id": "notes", "chunk_size_in_tokens": 64,
            "documents": [{"document_id": d, "content": text, "mime_type": "text/plain", "metadata": {"topic": d}}
                          for d, text in DOCUMENTS.items()],
        }).raise_for_status()
        store = http.post("/v1/vector_stores", json={"name": "animals"}).json()
        file = http.post("/v1/files", files={"file": ("otters.txt", DOCUMENTS["otter"].encode())},
                         data={"purpose": "assistants"}).json()
        http.post(f"/v1/vector_stores/{store['id']}/files", json={"file_id": file["id"]}).raise_for_status()
        import time

        while http.get(f"/v1/vector_stores/{store['id']}/files/{file['id']}").json()["status"] == "in_progress":
            time.sleep(0.2)
        print(store["id"], file["id"])


if __name__ == "__main__":
    main(sys.argv[1])
