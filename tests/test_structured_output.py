"""Structured output on the real local model: a response_format (OpenAI chat, Llama Stack classic
inference and agents) or text.format (Responses) holds the answer to JSON that parses and fits the
schema; a shape that cannot be followed is a 400 that says what to fix, and never costs the model's
process."""

from __future__ import annotations

import json

import httpx
import pytest
from llama_stack_client import LlamaStackClient
from openai import BadRequestError

from conftest import register_tutorial_db, worker_pids

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
QUESTION = "What is the capital of France?"
CAPITAL = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"],
           "additionalProperties": False}
CITY = {"type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"},
                       "population_millions": {"type": "number"}},
        "required": ["city", "country", "population_millions"], "additionalProperties": False}


def fits(value: object, schema: dict) -> bool:
    """The part of JSON Schema these tests use: objects of typed, required, closed properties."""
    types = {"string": str, "number": (int, float), "integer": int, "object": dict}
    if not isinstance(value, types[schema["type"]]) or isinstance(value, bool):
        return False
    if schema["type"] != "object":
        return True
    props = schema.get("properties", {})
    if not set(schema.get("required", [])) <= set(value):
        return False
    if schema.get("additionalProperties") is False and not set(value) <= set(props):
        return False
    return all(fits(value[k], props[k]) for k in value if k in props)


@pytest.fixture(scope="module")
def http(agent_stack):
    with agent_stack.client() as client:
        yield client


def test_chat_completions_hold_the_answer_to_the_schema(oai):
    reply = oai.chat.completions.create(
        model=MODEL, max_tokens=48, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}})
    answer = json.loads(reply.choices[0].message.content)
    assert fits(answer, CITY), answer
    assert "paris" in answer["city"].lower()


def test_chat_completions_stream_json_object(oai):
    stream = oai.chat.completions.create(
        model=MODEL, max_tokens=48, stream=True, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": f"{QUESTION} Answer as a JSON object."}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert isinstance(json.loads(text), dict), text


def test_text_format_is_plain_text(oai):
    reply = oai.chat.completions.create(model=MODEL, max_tokens=8, response_format={"type": "text"},
                                        messages=[{"role": "user", "content": "Reply with: pong"}])
    assert "pong" in reply.choices[0].message.content.lower()


def test_llama_stack_classic_inference(agent_stack):
    """The 0.2.12 client's shape: {"type": "json_schema", "json_schema": <the schema itself>}."""
    client = LlamaStackClient(base_url=agent_stack.url)
    fmt = {"type": "json_schema", "json_schema": CAPITAL}
    reply = client.inference.chat_completion(model_id=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                             response_format=fmt, sampling_params={"max_tokens": 24})
    answer = json.loads(reply.completion_message.content)
    assert fits(answer, CAPITAL) and "paris" in answer["capital"].lower(), answer
    done = client.inference.completion(model_id=MODEL, content="The capital of France as JSON: ",
                                       response_format=fmt, sampling_params={"max_tokens": 24})
    assert fits(json.loads(done.content), CAPITAL), done.content


@pytest.mark.parametrize("text_format", [
    {"type": "text"},
    {"type": "json_schema", "name": "capitals", "description": "A schema for the capital of each country",
     "schema": {"type": "object", "properties": {"capital": {"type": "string"}}}, "strict": True},
])
def test_response_text_format(oai, text_format):
    """Llama Stack v0.7.1's tests/integration/responses/test_file_search.py::test_response_text_format."""
    response = oai.responses.create(model=MODEL, input=QUESTION, text={"format": text_format}, max_output_tokens=48)
    assert response.text.format.model_dump(exclude_none=True, by_alias=True) == text_format
    assert "paris" in response.output_text.lower()
    if text_format["type"] == "json_schema":
        assert "paris" in json.loads(response.output_text)["capital"].lower()
        assert oai.responses.retrieve(response.id).text.format.model_dump(exclude_none=True, by_alias=True) \
            == text_format


def test_agent_answers_in_its_response_format(agent_stack):
    client = LlamaStackClient(base_url=agent_stack.url)
    agent = client.agents.create(agent_config={
        "model": MODEL, "instructions": "You answer questions about geography.",
        "sampling_params": {"max_tokens": 24},
        "response_format": {"type": "json_schema", "json_schema": CAPITAL}})
    session = client.agents.session.create(agent_id=agent.agent_id, session_name="json")
    turn = client.agents.turn.create(agent_id=agent.agent_id, session_id=session.session_id, stream=False,
                                     messages=[{"role": "user", "content": QUESTION}])
    answer = json.loads(turn.output_message.content)
    assert fits(answer, CAPITAL) and "paris" in answer["capital"].lower(), answer


@pytest.mark.slow
def test_rag_agent_answers_from_the_documents_in_its_format(agent_stack, docs_url):
    """builtin::rag retrieves first, then the answer is written from the passages, in the format."""
    db = register_tutorial_db(agent_stack.url, docs_url, 512)
    schema = {"type": "object", "properties": {"attention": {"type": "string"}}, "required": ["attention"]}
    client = LlamaStackClient(base_url=agent_stack.url)
    agent = client.agents.create(agent_config={
        "model": MODEL, "instructions": "You answer from the documents.", "sampling_params": {"max_tokens": 48},
        "toolgroups": [{"name": "builtin::rag", "args": {"vector_db_ids": [db]}}],
        "response_format": {"type": "json_schema", "json_schema": schema}})
    session = client.agents.session.create(agent_id=agent.agent_id, session_name="rag-json")
    turn = client.agents.turn.create(agent_id=agent.agent_id, session_id=session.session_id, stream=False,
                                     messages=[{"role": "user", "content": "What attention does Llama3-8B use?"}])
    assert any(s.step_type == "tool_execution" for s in turn.steps)
    answer = json.loads(turn.output_message.content)
    assert fits(answer, schema), answer
    assert "grouped" in answer["attention"].lower() or "gqa" in answer["attention"].lower(), answer


def test_agent_format_with_tools_the_model_may_call_is_refused(http):
    r = http.post("/v1/agents", json={"agent_config": {
        "model": MODEL, "instructions": "",
        "client_tools": [{"name": "get_weather", "description": "weather", "parameters": []}],
        "response_format": {"type": "json_schema", "json_schema": CAPITAL}}})
    assert r.status_code == 400 and "response_format" in r.json()["detail"] and "get_weather" in r.json()["detail"]
    r = http.post("/v1/agents", json={"agent_config": {
        "model": MODEL, "instructions": "", "response_format": {"type": "grammar", "bnf": {"root": "x"}}}})
    assert r.status_code == 400 and "grammar" in r.json()["detail"]


def deep_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("response_format,words", [
    ({"type": "yaml"}, "does not match any of the expected tags"),
    ({"type": "json_schema", "json_schema": {"schema": CAPITAL}}, "name"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "maxLength": 10**9}}},
     "at most 500"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": deep_schema(40)}}, "nests deeper"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"enum": ["x" * 1000] * 20}}}, "bytes"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "http://169.254.169.254/s.json"}}},
     "not local"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "[a-z]{9999}"}}},
     "at most 500"),
])
def test_bad_shapes_are_refused_before_the_model(http, response_format, words):
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                "response_format": response_format})
    assert r.status_code == 400, r.text
    assert words in r.json()["detail"]


def test_classic_grammar_and_unknown_types_are_refused(http):
    for fmt, words in [({"type": "grammar", "bnf": {"root": "x"}}, "json_schema"),
                       ({"type": "json_object"}, "does not match any of the expected tags")]:
        r = http.post("/v1/inference/chat-completion", json={
            "model_id": MODEL, "messages": [{"role": "user", "content": "hi"}], "response_format": fmt})
        assert r.status_code == 400 and words in r.json()["detail"], r.text
    r = http.post("/v1/responses", json={"model": MODEL, "input": "hi", "text": {"format": {"type": "xml"}}})
    assert r.status_code == 400, r.text


def test_a_schema_the_model_cannot_follow_is_a_400_and_the_model_lives(agent_stack, oai):
    before = worker_pids(agent_stack.process.pid)
    assert before, "the local model process should be running"
    with pytest.raises(BadRequestError) as refused:
        oai.chat.completions.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}],
                                    response_format={"type": "json_schema", "json_schema": {
                                        "name": "x", "schema": {"type": "string", "pattern": "[a-z]+"}}})
    assert "cannot follow this schema" in str(refused.value)
    with pytest.raises(BadRequestError) as refused:
        oai.chat.completions.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            response_format={"type": "json_object"})
    assert "tools" in str(refused.value)
    assert worker_pids(agent_stack.process.pid) == before
    reply = oai.chat.completions.create(model=MODEL, max_tokens=24, response_format={"type": "json_object"},
                                        messages=[{"role": "user", "content": f"{QUESTION} Answer in JSON."}])
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
