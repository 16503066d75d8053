"""Remote inference through the OpenAI-compatible adapter, against a real OpenAI-compatible server:
llama.cpp's own (`python -m llama_cpp.server`) on 127.0.0.1 with the packaged GGUF. The same
adapter serves remote::openai, remote::vllm, remote::together and remote::ollama; hosted APIs
cannot be reached from here, so a local server stands in for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from llama_stack_client import LlamaStackClient
from llama_stack_client.lib.agents.agent import Agent
from llama_stack_client.types.agent_create_params import AgentConfig

from conftest import inline_vector_io, register_tutorial_db, start_server
from milvus_servers import free_port
from stackrag.providers.inference.gguf_weights import CATALOG, DEFAULT_WEIGHTS, materialise
from stackrag.providers.inference.llama_worker import variant_dir
from stackrag.providers.inference.model_process import proven_variant

ALIAS = "qwen-local"


@pytest.fixture(scope="module")
def llama_server(models_dir, tmp_path_factory):
    gguf = materialise(CATALOG[DEFAULT_WEIGHTS], models_dir)
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    # The portable build links no CPU backend: llama.cpp's own server gets the variant ours serves with.
    best = proven_variant(gguf)
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", ALIAS,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--api_key", "sk-local-test"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "GGML_BACKEND_PATH": str(variant_dir() / f"libggml-cpu-{best}.so")},
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/models", headers={"authorization": "Bearer sk-local-test"}, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"llama_cpp.server did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module", params=["remote::openai", "remote::vllm"])
def remote_stack(request, llama_server, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("remote-inference")
    config = data_dir / "run.yaml"
    config.write_text(
        "providers:\n  inference:\n  - provider_id: local-server\n"
        f"    provider_type: {request.param}\n"
        f"    config: {{url: '{llama_server}', api_key: sk-local-test}}\n"
        "  vector_io:\n" + inline_vector_io() +
        "models:\n- model_id: remote-qwen\n  provider_id: local-server\n"
        f"  provider_model_id: {ALIAS}\n  model_type: llm\n"
        # A prompt whose rewrite is sure to differ from the query, so the test sees that it ran.
        "retrieval:\n  rewrite_query: {model: remote-qwen, max_tokens: 32, temperature: 0,\n"
        "    prompt: 'Write this search query in capital letters, nothing else: {query}'}\n"
    )
    server = start_server(data_dir, config)
    yield server
    server.stop()


def test_chat_completion_and_streaming(remote_stack):
    client = LlamaStackClient(base_url=remote_stack.url)
    reply = client.inference.chat_completion(
        model_id="remote-qwen", messages=[{"role": "user", "content": "Reply with the single word: pong"}],
        sampling_params={"max_tokens": 8},
    )
    assert "pong" in reply.completion_message.content.lower()
    events = [c.event for c in client.inference.chat_completion(
        model_id="remote-qwen", messages=[{"role": "user", "content": "Count from 1 to 5."}], stream=True,
        sampling_params={"max_tokens": 32},
    )]
    assert events[0].event_type == "start" and events[-1].event_type == "complete"
    assert "3" in "".join(e.delta.text for e in events if e.event_type == "progress")


def test_response_format_is_passed_through(remote_stack):
    """OpenAI's shape goes to the provider as is: llama_cpp.server follows json_object and refuses
    json_schema, a type it does not know (with a 500, its own bug), and the caller reads why: the
    format is never dropped unseen."""
    url = f"{remote_stack.url}/v1/chat/completions"
    messages = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
    r = httpx.post(url, timeout=120, json={"model": "remote-qwen", "messages": messages, "max_tokens": 24,
                                           "response_format": {"type": "json_object"}})
    assert r.status_code == 200, r.text
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)
    r = httpx.post(url, timeout=120, json={"model": "remote-qwen", "messages": messages, "max_tokens": 24,
                                           "response_format": {"type": "json_schema", "json_schema": {
                                               "name": "capital", "schema": {"type": "object"}}}})
    assert r.status_code == 503 and "Input should be 'text' or 'json_object'" in r.json()["detail"], r.text


def test_agent_turn_over_remote_inference(remote_stack, docs_url):
    client = LlamaStackClient(base_url=remote_stack.url)
    db = register_tutorial_db(remote_stack.url, docs_url, 512)
    agent = Agent(client, AgentConfig(model="remote-qwen", instructions="Answer briefly.",
                                      enable_session_persistence=False,
                                      toolgroups=[{"name": "builtin::rag", "args": {"vector_db_ids": [db]}}]))
    turn = agent.create_turn(messages=[{"role": "user", "content": "What attention does Llama3-8B use?"}],
                             session_id=agent.create_session("remote"), stream=False)
    assert "grouped" in turn.output_message.content.lower() or "gqa" in turn.output_message.content.lower()
    assert any(s.step_type == "tool_execution" for s in turn.steps)


def test_vector_store_search_rewrites_the_query_with_the_configured_model(remote_stack):
    """rewrite_query with retrieval.rewrite_query.model set: the model rewrites, the page reports
    the query searched (as the reference does)."""
    from openai import OpenAI

    oai = OpenAI(base_url=f"{remote_stack.url}/v1", api_key="none")
    uploaded = oai.files.create(file=("lora.txt", b"LoRA freezes the base model and trains low-rank adapters."),
                                purpose="assistants")
    store = oai.vector_stores.create(name="rewrite", file_ids=[uploaded.id])
    plain = oai.vector_stores.search(vector_store_id=store.id, query="lora adapters")
    rewritten = oai.vector_stores.search(vector_store_id=store.id, query="lora adapters", rewrite_query=True)
    assert plain.search_query == ["lora adapters"]
    assert rewritten.search_query and rewritten.search_query != plain.search_query
    assert rewritten.data and rewritten.data[0].file_id == uploaded.id


def test_a_wrong_key_is_a_clear_error(llama_server, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "providers:\n  inference:\n  - provider_id: local-server\n    provider_type: remote::openai\n"
        f"    config: {{url: '{llama_server}', api_key: wrong-key}}\n"
        "models:\n- model_id: remote-qwen\n  provider_id: local-server\n"
        f"  provider_model_id: {ALIAS}\n  model_type: llm\n"
    )
    server = start_server(tmp_path / "data", config)
    try:
        r = httpx.post(f"{server.url}/v1/inference/chat-completion", timeout=60, json={
            "model_id": "remote-qwen", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503
        assert "answered 401" in r.json()["detail"] and "wrong-key" not in r.text
        # The per-request key from X-LlamaStack-Provider-Data wins over the config's.
        r = httpx.post(f"{server.url}/v1/inference/chat-completion", timeout=60,
                       headers={"X-LlamaStack-Provider-Data": '{"openai_api_key": "sk-local-test"}'},
                       json={"model_id": "remote-qwen", "messages": [{"role": "user", "content": "Say hi"}],
                             "sampling_params": {"max_tokens": 4}})
        assert r.status_code == 200, r.text
    finally:
        server.stop()
