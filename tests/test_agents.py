"""The user's story end to end, offline: the tutorial's client program runs unchanged against
stackrag with the local model, and a RAG turn streams the spec's events in the spec's order."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import pytest
from llama_stack_client import BadRequestError, LlamaStackClient, NotFoundError
from llama_stack_client.lib.agents.agent import Agent
from llama_stack_client.types.agent_create_params import AgentConfig

from conftest import SHARED, register_tutorial_db, start_example_server

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
TOPICS = {
    "lora": r"\blora\b|qlora|low-rank",
    "chat": r"\bchat\b|conversation|dialog",
    "llama3": r"llama\s*-?3",
    "memory": r"memory|activation checkpoint|quantiz|offload",
    "precision": r"precision|bfloat16|\bbf16|float32|\bfp32",
    "evaluation": r"evaluat|eleuther|benchmark",
    "finetuning": r"fine-?tun",
}


@pytest.fixture(scope="module")
def rag_db(agent_stack, docs_url):
    return register_tutorial_db(agent_stack.url, docs_url, 512)


def rag_turn_events(url: str, vector_db_id: str, question: str) -> tuple[Agent, str, list]:
    """A fresh RAG agent and session, one streamed turn: (agent, session_id, event payloads)."""
    agent = Agent(LlamaStackClient(base_url=url), AgentConfig(
        model=MODEL, instructions="You are a helpful assistant. Answer briefly.", enable_session_persistence=False,
        toolgroups=[{"name": "builtin::rag/knowledge_search", "args": {"vector_db_ids": [vector_db_id]}}],
    ))
    session_id = agent.create_session("test")
    chunks = agent.create_turn(messages=[{"role": "user", "content": question}], session_id=session_id, stream=True)
    return agent, session_id, [c.event.payload for c in chunks]


def test_tutorial_program_runs_unchanged(agent_stack, docs_url):
    env = {**os.environ, "LLAMA_STACK_PORT": str(agent_stack.port), "DOCS_BASE_URL": docs_url}
    env.pop("INFERENCE_MODEL", None)  # the tutorial's own model id, mapped by the config
    done = subprocess.run([sys.executable, str(SHARED / "seed" / "rag_agent_tutorial.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "inserting..." in out and "finish init agent..." in out and "Response:" in out
    answer = out.split("Response:", 1)[1].lower()
    named = [topic for topic, pattern in TOPICS.items() if re.search(pattern, answer)]
    assert len(named) >= 3, (named, answer)


def test_rag_turn_events_follow_the_spec(agent_stack, rag_db):
    client = LlamaStackClient(base_url=agent_stack.url)
    agent, session_id, payloads = rag_turn_events(agent_stack.url, rag_db,
                                                  "What attention mechanism does Llama3-8B use?")
    kinds = [(p.event_type, getattr(p, "step_type", None)) for p in payloads]
    assert kinds[:3] == [("step_start", "inference"), ("step_progress", "inference"), ("step_complete", "inference")]
    assert kinds[3:6] == [("step_start", "tool_execution"), ("step_progress", "tool_execution"),
                          ("step_complete", "tool_execution")]
    assert kinds[6] == ("step_start", "inference")
    assert all(k == ("step_progress", "inference") for k in kinds[7:-2])
    assert kinds[-2:] == [("step_complete", "inference"), ("turn_complete", None)]
    assert payloads[1].delta.type == "tool_call" and payloads[1].delta.parse_status == "succeeded"
    assert payloads[4].delta.parse_status == "in_progress"

    turn = payloads[-1].turn
    assert turn.session_id == session_id and turn.output_attachments == []
    tool_step = next(s for s in turn.steps if s.step_type == "tool_execution")
    assert tool_step.tool_calls[0].tool_name == "knowledge_search"
    ids = tool_step.tool_responses[0].metadata["document_ids"]
    assert ids and all(i.startswith("num-") for i in ids)
    text = "".join(item.text for item in tool_step.tool_responses[0].content)
    assert text.startswith("knowledge_search tool found")
    answer = turn.output_message.content
    assert answer and answer == "".join(p.delta.text for p in payloads[7:-2])
    assert "grouped" in answer.lower() or "gqa" in answer.lower(), answer
    assert turn.model_extra["sources"][0] == ids[0]

    stored = client.agents.turn.retrieve(agent_id=agent.agent_id, session_id=session_id, turn_id=turn.turn_id)
    assert stored.output_message.content == answer
    step = client.agents.steps.retrieve(agent_id=agent.agent_id, session_id=session_id, turn_id=turn.turn_id,
                                        step_id=tool_step.step_id)
    assert step.step.step_type == "tool_execution"


def test_a_question_the_documents_do_not_cover_is_declined(agent_stack, rag_db):
    """No relevant chunk: the agent says so, in the same event shape, instead of answering from memory."""
    from stackrag.services.agents import NO_CONTEXT_ANSWER

    _, _, payloads = rag_turn_events(agent_stack.url, rag_db, "What is the capital city of Australia?")
    turn = payloads[-1].turn
    assert turn.output_message.content == NO_CONTEXT_ANSWER
    tool_step = next(s for s in turn.steps if s.step_type == "tool_execution")
    assert tool_step.tool_responses[0].metadata["document_ids"] == []
    assert [s.step_type for s in turn.steps] == ["inference", "tool_execution", "inference"]
    assert "".join(p.delta.text for p in payloads if p.event_type == "step_progress"
                   and p.step_type == "inference" and p.delta.type == "text") == NO_CONTEXT_ANSWER


def test_multi_turn_keeps_the_conversation(agent_stack):
    client = LlamaStackClient(base_url=agent_stack.url)
    # llama-stack-client 0.2.12's Agent reads agent_config["toolgroups"]: it must be given, even empty.
    agent = Agent(client, AgentConfig(model=MODEL, instructions="You are a helpful assistant.",
                                      enable_session_persistence=False, toolgroups=[]))
    session_id = agent.create_session("memory")
    agent.create_turn(messages=[{"role": "user", "content": "My favourite animal is the axolotl. Say OK."}],
                      session_id=session_id, stream=False)
    second = agent.create_turn(
        messages=[{"role": "user", "content": "What is my favourite animal? Answer with one word."}],
        session_id=session_id, stream=False,
    )
    assert "axolotl" in second.output_message.content.lower()
    session = client.agents.session.retrieve(agent_id=agent.agent_id, session_id=session_id)
    assert len(session.turns) == 2


def test_inference_routes(agent_stack):
    client = LlamaStackClient(base_url=agent_stack.url)
    reply = client.inference.chat_completion(
        model_id=MODEL, messages=[{"role": "user", "content": "Reply with the single word: pong"}],
        sampling_params={"max_tokens": 8},
    )
    assert "pong" in reply.completion_message.content.lower()
    stream = client.inference.chat_completion(
        model_id=MODEL, messages=[{"role": "user", "content": "Count from 1 to 5."}], stream=True,
        sampling_params={"max_tokens": 32},
    )
    events = [chunk.event for chunk in stream]
    assert events[0].event_type == "start" and events[-1].event_type == "complete"
    text = "".join(e.delta.text for e in events if e.event_type == "progress")
    assert "3" in text
    embedded = client.inference.embeddings(model_id="all-MiniLM-L6-v2", contents=["hello", "x " * 2000])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 384
    completion = client.inference.completion(model_id=MODEL, content="The capital of France is",
                                             sampling_params={"max_tokens": 5})
    assert "paris" in completion.content.lower()


def test_tool_runtime_invoke_and_list(agent_stack, rag_db):
    client = LlamaStackClient(base_url=agent_stack.url)
    result = client.tool_runtime.invoke_tool(tool_name="knowledge_search",
                                             kwargs={"query": "QLoRA", "vector_db_ids": [rag_db]})
    assert result.metadata["document_ids"]
    assert "".join(i.text for i in result.content).startswith("knowledge_search tool found")
    tools = client.tool_runtime.list_tools(tool_group_id="builtin::rag")
    assert {t.name for t in tools} == {"knowledge_search", "insert_into_memory"}
    with pytest.raises(NotFoundError):
        client.tool_runtime.invoke_tool(tool_name="web_search", kwargs={})


def test_agent_errors(agent_stack):
    client = LlamaStackClient(base_url=agent_stack.url)
    with pytest.raises(NotFoundError, match="not found"):
        client.agents.create(agent_config={"model": "no-such-model", "instructions": "x"})
    with pytest.raises(BadRequestError, match="not a chat model"):
        client.agents.create(agent_config={"model": "all-MiniLM-L6-v2", "instructions": "x"})
    with pytest.raises(BadRequestError, match="toolgroup"):
        client.agents.create(agent_config={"model": MODEL, "instructions": "x", "toolgroups": ["builtin::web"]})
    agent_id = client.agents.create(agent_config={"model": MODEL, "instructions": "x"}).agent_id
    with pytest.raises(NotFoundError):
        client.agents.session.retrieve(agent_id=agent_id, session_id="nope")
    session_id = client.agents.session.create(agent_id=agent_id, session_name="s").session_id
    with pytest.raises(BadRequestError, match="role"):
        client.agents.turn.create(agent_id=agent_id, session_id=session_id, stream=True,
                                  messages=[{"role": "system", "content": "x"}])
    listed = httpx.get(f"{agent_stack.url}/v1/agents").json()  # 0.2.12's client has no agents.list
    assert agent_id in [a["agent_id"] for a in listed["data"]] and listed["has_more"] is False
    client.agents.delete(agent_id=agent_id)
    assert httpx.get(f"{agent_stack.url}/v1/agents/{agent_id}").status_code == 404


def test_documents_attached_to_a_turn_are_searched_in_the_session(agent_stack, docs_url):
    """Llama Stack's test_rag_agent_with_attachments: an agent with no RAG toolgroup, documents (a URL
    and inline text) given with the first turn, a question about them in the second."""
    client = LlamaStackClient(base_url=agent_stack.url)
    agent = Agent(client, AgentConfig(model=MODEL, instructions="You are a helpful assistant.",
                                      enable_session_persistence=False, toolgroups=[]))
    session_id = agent.create_session("attachments")
    lora = (SHARED / "corpus" / "torchtune" / "lora_finetune.rst").read_text()[:500]
    documents = [{"document_id": "num-0", "content": {"type": "url", "uri": f"{docs_url}/llama3.rst"},
                  "mime_type": "text/plain", "metadata": {}},
                 {"document_id": "num-1", "content": lora, "mime_type": "text/plain", "metadata": {}}]
    agent.create_turn(messages=[{"role": "user", "content": "I am attaching some documentation for Torchtune. "
                                 "Help me answer questions I will ask next."}],
                      documents=documents, session_id=session_id, stream=False)
    turn = agent.create_turn(messages=[{"role": "user", "content": "Tell me how to use LoRA in 100 words or less"}],
                             session_id=session_id, stream=False)
    assert "lora" in turn.output_message.content.lower()
    searched = [s for s in turn.steps if s.step_type == "tool_execution"]
    assert searched and "num-1" in searched[0].tool_responses[0].metadata["document_ids"]
    # The documents live in the session's own vector DB, which goes with the session.
    session_db = f"session-{session_id}"
    assert httpx.get(f"{agent_stack.url}/v1/vector-dbs/{session_db}").status_code == 200
    client.agents.session.delete(agent_id=agent.agent_id, session_id=session_id)
    assert httpx.get(f"{agent_stack.url}/v1/vector-dbs/{session_db}").status_code == 404
    # A document that cannot be read is a 400 before the turn starts, naming it.
    session_id = agent.create_session("bad attachment")
    with pytest.raises(BadRequestError, match="documents"):
        agent.create_turn(messages=[{"role": "user", "content": "Read this."}], session_id=session_id, stream=False,
                          documents=[{"content": {"type": "url", "uri": f"{docs_url}/missing.rst"},
                                      "mime_type": "text/plain"}])


def get_boiling_point(liquid_name: str, celcius: bool = True) -> int:
    """
    Returns the boiling point of a liquid in Celcius or Fahrenheit.

    :param liquid_name: The name of the liquid
    :param celcius: Whether to return the boiling point in Celcius
    :return: The boiling point of the liquid in Celcius or Fahrenheit
    """
    if liquid_name.lower() == "polyjuice":
        return -100 if celcius else -212
    return -1


def test_client_tools_pause_the_turn_and_resume_continues_it(agent_stack):
    """Llama Stack's test_custom_tool / test_create_turn_response: a tool the client runs. The turn
    stops with turn_awaiting_input at the model's call, the client library runs the tool and resumes,
    and the turn ends inference -> tool_execution (the client's result) -> inference."""
    client = LlamaStackClient(base_url=agent_stack.url)
    agent = Agent(client, model=MODEL, instructions="You are a helpful assistant.", tools=[get_boiling_point])
    session_id = agent.create_session("client tools")
    question = "Call get_boiling_point tool and answer What is the boiling point of polyjuice?"
    turn = agent.create_turn(messages=[{"role": "user", "content": question}], session_id=session_id, stream=False)
    kinds = [s.step_type for s in turn.steps]
    assert kinds[:3] == ["inference", "tool_execution", "inference"], kinds
    execution = turn.steps[1]
    assert execution.tool_calls[0].tool_name == "get_boiling_point"
    assert str(execution.tool_responses[0].content) in ("-100", "-212")  # what the client's function returned
    assert turn.input_messages[0].content == question
    assert all(a.completed_at < b.started_at for a, b in zip(turn.steps, turn.steps[1:]))
    # A model that keeps calling the tool stops at max_infer_iters: the turn still completes.
    looping = Agent(client, model=MODEL, instructions="Always respond with tool calls no matter what.",
                    tools=[get_boiling_point], max_infer_iters=2)
    stopped = looping.create_turn(messages=[{"role": "user", "content": "Get the boiling point of polyjuice with a "
                                             "tool call."}], session_id=looping.create_session("loop"), stream=False)
    assert sum(s.step_type == "tool_execution" for s in stopped.steps) <= 2
    # tool_choice none offers no tool: no tool step at all.
    quiet = Agent(client, model=MODEL, instructions="You are a helpful assistant.", tools=[get_boiling_point],
                  tool_config={"tool_choice": "none"})
    answer = quiet.create_turn(messages=[{"role": "user", "content": question}],
                               session_id=quiet.create_session("none"), stream=False)
    assert [s.step_type for s in answer.steps] == ["inference"]
    # A resume of a turn that waits for nothing is a 400; of a turn that does not exist a 404.
    with pytest.raises(BadRequestError, match="complete"):
        client.agents.turn.resume(agent_id=agent.agent_id, session_id=session_id, turn_id=turn.turn_id,
                                  tool_responses=[])
    with pytest.raises(NotFoundError):
        client.agents.turn.resume(agent_id=agent.agent_id, session_id=session_id, turn_id="nope", tool_responses=[])
    with pytest.raises(BadRequestError, match="tool_choice"):
        client.agents.create(agent_config={"model": MODEL, "instructions": "x", "tool_choice": "no_such_tool"})


def test_persistent_sessions_survive_a_restart(tmp_path, models_dir):
    server = start_example_server(tmp_path / "data", models_dir)
    try:
        client = LlamaStackClient(base_url=server.url)
        agent = Agent(client, AgentConfig(model=MODEL, instructions="Be brief.", enable_session_persistence=True,
                                          toolgroups=[]))
        session_id = agent.create_session("kept")
        turn = agent.create_turn(messages=[{"role": "user", "content": "Say hello."}], session_id=session_id,
                                 stream=False)
    finally:
        server.stop()
    server = start_example_server(tmp_path / "data", models_dir)
    try:
        client = LlamaStackClient(base_url=server.url)
        session = client.agents.session.retrieve(agent_id=agent.agent_id, session_id=session_id)
        assert [t.turn_id for t in session.turns] == [turn.turn_id]
        assert session.turns[0].output_message.content == turn.output_message.content
    finally:
        server.stop()
