"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis), slow tier.

Every operation gets schema-derived and deliberately invalid requests (the coverage and fuzzing phases)
against a real server on Milvus Lite with the local chat model. The run fails on any 5xx, a status code
the schema does not list, a wrong content type, or a body that breaks the documented response schema.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from conftest import ROOT, TUTORIAL_DOCS, Server, start_example_server

pytestmark = pytest.mark.slow

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def create_real_objects(server: Server) -> dict[str, str]:
    """One of each object the API addresses by id, so fuzzed paths can point at something that exists."""
    with server.client() as http:
        def post(path: str, body: dict) -> dict:
            response = http.post(path, json=body)
            assert response.status_code == 200, response.text
            return response.json() if response.content else {}

        post("/v1/vector-dbs", {"vector_db_id": "fuzz-db", "embedding_model": "all-MiniLM-L6-v2",
                                "embedding_dimension": 384, "provider_id": "milvus"})
        post("/v1/vector-io/insert", {"vector_db_id": "fuzz-db", "chunks": [
            {"content": "LoRA adds low-rank adapters to frozen weights.", "metadata": {"document_id": "doc-1"}}]})
        agent_id = post("/v1/agents", {"agent_config": {
            "model": MODEL, "instructions": "Answer briefly.", "sampling_params": {"max_tokens": 8},
            "toolgroups": [{"name": "builtin::rag/knowledge_search", "args": {"vector_db_ids": ["fuzz-db"]}}],
        }})["agent_id"]
        session_id = post(f"/v1/agents/{agent_id}/session", {"session_name": "fuzz"})["session_id"]
        turn = post(f"/v1/agents/{agent_id}/session/{session_id}/turn",
                    {"messages": [{"role": "user", "content": "What does LoRA add?"}], "stream": False})
    openai = OpenAI(base_url=f"{server.url}/v1", api_key="none")
    file = openai.files.create(file=(TUTORIAL_DOCS / "chat.rst").open("rb"), purpose="assistants")
    store = openai.vector_stores.create(name="fuzz", file_ids=[file.id])
    batch = openai.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[file.id])
    conversation = openai.conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}])
    item = openai.conversations.items.list(conversation_id=conversation.id).data[0]
    response = openai.responses.create(model=MODEL, input="Say hi.", max_output_tokens=8)
    return {
        "vector_db_id": "fuzz-db", "model_id": "all-MiniLM-L6-v2", "provider_id": "milvus",
        "toolgroup_id": "builtin::rag", "tool_name": "knowledge_search",
        "agent_id": agent_id, "session_id": session_id, "turn_id": turn["turn_id"],
        "step_id": turn["steps"][0]["step_id"], "file_id": file.id, "store_id": store.id, "batch_id": batch.id,
        "conversation_id": conversation.id, "item_id": item.id, "response_id": response.id,
    }


def test_api_survives_schema_fuzzing(tmp_path: Path, models_dir: Path):
    server = start_example_server(tmp_path / "data", models_dir)
    try:
        ids = create_real_objects(server)
        st = Path(sys.executable).with_name("st")
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks", "STACKRAG_FUZZ_IDS": json.dumps(ids),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
        run = subprocess.run(
            [str(st), "run", f"{server.url}/openapi.json", "--checks", CHECKS, "--phases", "coverage,fuzzing",
             "--max-examples", "12", "--workers", "1", "--request-timeout", "120", "--seed", "20261125",
             "--generation-database", "none", "--no-color", "--report", "junit",
             "--report-dir", str(tmp_path / "report")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
        (tmp_path / "schemathesis.out").write_text(run.stdout + run.stderr)
        summary = run.stdout[-6000:]
        assert run.returncode == 0, f"schemathesis found failures (full output in {tmp_path}/schemathesis.out):\n{summary}"
        selected = re.search(r"Selected: (\d+)/(\d+)", summary)
        tested = re.search(r"Tested: (\d+)", summary)
        assert selected and tested and int(tested[1]) == int(selected[2]) > 100, summary
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/v1/health").status_code == 200
    finally:
        server.stop()
