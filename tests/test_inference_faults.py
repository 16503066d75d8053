"""A failing inference provider ends a streamed answer with a clear error event, in bounded time.

The provider here is a FAKE OpenAI-compatible server (a few lines of http.server below): a real one
cannot be made to break off, stall or send garbage on cue, and hosted APIs are out of reach. Each model
id is one way of failing. stackrag, its Milvus and the clients are real.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import httpx
import pytest
from llama_stack_client import LlamaStackClient
from openai import APIError as OpenAIAPIError
from openai import OpenAI

from conftest import Server, inline_vector_io, start_server

FAILURES = ("drop", "stall", "garbage", "cut")
STALL_SECONDS = 30
TIMEOUT = 2  # the provider's config.timeout in this test


def _chunk(text: str, finish: str | None = None) -> bytes:
    event = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    return f"data: {json.dumps(event)}\n\n".encode()


class FakeProvider(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        mode = body["model"]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        if mode == "cut":  # no length, no chunking: the body ends when the connection closes, cleanly
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(_chunk("Hel"))
            self.wfile.flush()
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def send(data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        send(_chunk("Hel"))
        if mode == "drop":  # the connection dies in the middle of a chunk
            self.wfile.write(b"400\r\ndata: {\"choi")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif mode == "stall":
            time.sleep(STALL_SECONDS)
        elif mode == "garbage":
            send(b"data: {this is not json\n\n")
            send(b"")


@pytest.fixture(scope="module")
def faulty_stack(tmp_path_factory) -> Iterator[Server]:
    fake = ThreadingHTTPServer(("127.0.0.1", 0), FakeProvider)
    fake.daemon_threads = True
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    data_dir = tmp_path_factory.mktemp("inference-faults")
    config = data_dir / "run.yaml"
    config.write_text(
        "providers:\n  inference:\n  - provider_id: flaky\n    provider_type: remote::openai\n"
        f"    config: {{url: 'http://127.0.0.1:{fake.server_port}/v1', api_key: sk-fake, timeout: {TIMEOUT}}}\n"
        "  vector_io:\n" + inline_vector_io() + "models:\n"
        + "".join(f"- model_id: {m}\n  provider_id: flaky\n  provider_model_id: {m}\n  model_type: llm\n"
                  for m in FAILURES)
    )
    # Keepalive comments every 0.5 s, so that the stall (2 s) shows them.
    server = start_server(data_dir, config, env={"STACKRAG_SSE_KEEPALIVE_SECONDS": "0.5"})
    yield server
    server.stop()
    fake.shutdown()


EXPECTED = {
    "drop": "broke off the answer mid-stream",
    "stall": f"sent nothing for {TIMEOUT} s",
    "garbage": "malformed stream event",
    "cut": "ended the stream before the answer was complete",
}


@pytest.mark.parametrize("mode", FAILURES)
def test_classic_stream_ends_with_an_error_event(faulty_stack, mode):
    """llama-stack-client 0.2.x yields the error event as a last chunk with an `error` field (as the
    reference server sends it); the text that arrived before the fault was passed on."""
    client = LlamaStackClient(base_url=faulty_stack.url)
    started = time.monotonic()
    chunks = list(client.inference.chat_completion(
        model_id=mode, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert time.monotonic() - started < TIMEOUT + 10
    error = (chunks[-1].model_extra or {}).get("error")
    assert error and EXPECTED[mode] in error["message"] and error["status_code"] == 503, chunks[-1]
    assert "sk-fake" not in error["message"]
    assert "".join(c.event.delta.text for c in chunks[:-1] if c.event.event_type == "progress") == "Hel"


@pytest.mark.parametrize("mode", ["drop", "stall"])
def test_agent_turn_stream_ends_with_an_error_event(faulty_stack, mode):
    with faulty_stack.client() as http:
        agent_id = http.post("/v1/agents", json={"agent_config": {
            "model": mode, "instructions": "Be brief."}}).json()["agent_id"]
        session_id = http.post(f"/v1/agents/{agent_id}/session", json={"session_name": "s"}).json()["session_id"]
        started = time.monotonic()
        events, keepalives = [], 0
        with http.stream("POST", f"/v1/agents/{agent_id}/session/{session_id}/turn",
                         json={"messages": [{"role": "user", "content": "hi"}], "stream": True}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                keepalives += line == ": keepalive"
        # A silent model does not leave the client without a byte long enough to time out.
        assert mode != "stall" or keepalives >= 2, keepalives
        assert time.monotonic() - started < TIMEOUT + 10
        assert "error" in events[-1], events[-1]
        assert EXPECTED[mode] in events[-1]["error"]["message"]
        assert events[-1]["error"]["status_code"] == 503
        assert http.get("/v1/health").json()["status"] == "OK"


def test_openai_stream_ends_with_an_error_and_a_plain_request_gets_503(faulty_stack):
    openai = OpenAI(base_url=f"{faulty_stack.url}/v1", api_key="none", max_retries=0)
    with pytest.raises(OpenAIAPIError) as failure:
        for _ in openai.chat.completions.create(model="drop", stream=True,
                                                messages=[{"role": "user", "content": "hi"}]):
            pass
    assert EXPECTED["drop"] in str(failure.value)
    r = httpx.post(f"{faulty_stack.url}/v1/chat/completions", timeout=30,
                   json={"model": "cut", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and EXPECTED["cut"] in r.json()["detail"]
