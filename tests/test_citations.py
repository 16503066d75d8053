"""Answers you can check: each sentence of an answer attributed to the passages that support it, as
file_citation annotations in responses, as `citations` in agent turns (parsed by the tutorial's
0.2.12 client) and printed by `stackrag ask`; an unsupported sentence is marked, and attribution that
fails leaves the answer as it was."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from llama_stack_client import LlamaStackClient
from llama_stack_client.lib.agents.agent import Agent
from llama_stack_client.types.agent_create_params import AgentConfig

from conftest import ROOT, TUTORIAL_DOCS, new_id, register_tutorial_db

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
QUESTION = "What attention mechanism does Llama3-8B use?"
LLAMA3_OPENING = (TUTORIAL_DOCS / "llama3.rst").read_text()[:3000]


# -- the attribution service, in process, on the real MiniLM --


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from stackrag.config import ModelEntry
    from stackrag.providers.inference.sentence_transformers import SentenceTransformersProvider
    from stackrag.services.models import ModelService
    from stackrag.storage.registry import SQLiteRegistry

    tmp = tmp_path_factory.mktemp("attribution")
    provider = SentenceTransformersProvider("sentence-transformers", "inline::sentence-transformers", {}, tmp)
    service = ModelService(SQLiteRegistry(tmp / "registry.db"), {"sentence-transformers": provider})
    service.declare([ModelEntry(model_id="all-MiniLM-L6-v2", provider_id="sentence-transformers",
                                model_type="embedding", metadata={"embedding_dimension": 384})])
    return service


def test_a_supported_sentence_cites_its_passage_and_an_invented_one_is_marked(models):
    from stackrag.services.citations import MAX_ANSWER_CHARS, Attribution, Passage

    answer = ("Llama3-8B uses grouped-query attention, which improves inference speed. "
              "The moon is made of green cheese and orbits Jupiter.")
    passages = [Passage("chat.rst", (TUTORIAL_DOCS / "chat.rst").read_text()[:3000]),
                Passage("llama3.rst", LLAMA3_OPENING)]
    found = asyncio.run(Attribution(models).check(answer, passages))
    assert [s.text for s in found] == [answer[s.start:s.end] for s in found]
    assert [s.supported for s in found] == [True, False]
    assert found[0].sources[0].source_id == "llama3.rst" and found[0].sources[0].passage == 1

    # A long answer is checked up to the bound, not all of it.
    long = asyncio.run(Attribution(models).check(" ".join([answer] * 200), passages))
    assert long and max(s.end for s in long) <= MAX_ANSWER_CHARS


def test_attribution_that_cannot_run_gives_no_citations_instead_of_an_error(tmp_path):
    from stackrag.services.citations import Attribution, Passage
    from stackrag.services.models import ModelService
    from stackrag.storage.registry import SQLiteRegistry

    no_embedder = ModelService(SQLiteRegistry(tmp_path / "registry.db"), {})
    assert asyncio.run(Attribution(no_embedder).check("Llama3 uses grouped-query attention.",
                                                      [Passage("llama3.rst", LLAMA3_OPENING)])) is None


# -- responses with file_search: file_citation annotations at the sentence's end --


@pytest.fixture(scope="module")
def store(oai):
    uploaded = {}
    vs = oai.vector_stores.create(name=new_id("cite"))
    for name in ("chat.rst", "llama3.rst"):
        with open(TUTORIAL_DOCS / name, "rb") as f:
            uploaded[name] = oai.files.create(file=(name, f, "text/x-rst"), purpose="assistants")
        oai.vector_stores.files.create(vector_store_id=vs.id, file_id=uploaded[name].id)
    deadline = time.monotonic() + 300
    while any(oai.vector_stores.files.retrieve(file_id=f.id, vector_store_id=vs.id).status == "in_progress"
              for f in uploaded.values()) and time.monotonic() < deadline:
        time.sleep(0.3)
    return vs, uploaded


def check_annotations(text: str, annotations: list, uploaded: dict) -> list:
    names = {f.id: name for name, f in uploaded.items()}
    for a in annotations:
        assert a.type == "file_citation" and names[a.file_id] == a.filename
        # Where OpenAI puts a citation: just after the sentence, on its last character.
        assert 0 < a.index <= len(text) and not text[a.index - 1].isspace(), (a, text)
        assert a.index == len(text) or text[a.index].isspace() or text[a.index] in "\"')", (a, text)
    return [names[a.file_id] for a in annotations]


def test_responses_cite_the_file_that_supports_a_sentence(oai, store):
    vs, uploaded = store
    tools = [{"type": "file_search", "vector_store_ids": [vs.id], "max_num_results": 3}]
    response = oai.responses.create(model=MODEL, input=QUESTION, instructions="Answer in one sentence.",
                                    tools=tools, max_output_tokens=60)
    text = response.output_text
    assert "grouped" in text.lower() or "gqa" in text.lower(), text
    annotations = response.output[-1].content[0].annotations
    assert "llama3.rst" in check_annotations(text, annotations, uploaded), (text, annotations)
    assert oai.responses.retrieve(response.id).output[-1].content[0].annotations == annotations

    # Streamed: as Llama Stack 0.7.1 does, no annotation events; the finished part, item and
    # response carry them.
    events = list(oai.responses.create(model=MODEL, input=QUESTION, instructions="Answer in one sentence.",
                                       tools=tools, max_output_tokens=60, stream=True))
    kinds = [e.type for e in events]
    assert "response.output_text.annotation.added" not in kinds
    part = next(e for e in events if e.type == "response.content_part.done").part
    done = events[-1].response
    assert done.output[-1].content[0].annotations == part.annotations
    check_annotations(part.text, part.annotations, uploaded)


# -- agent turns: `citations`, parsed by the tutorial's client --


@pytest.fixture(scope="module")
def rag_db(agent_stack, docs_url):
    return register_tutorial_db(agent_stack.url, docs_url, 512)


def check_citations(answer: str, citations: list[dict], searched: list) -> None:
    metadata = [r.metadata for s in searched for r in s.tool_responses]
    ids = [d for m in metadata for d in m["document_ids"]]
    assert citations, answer
    for sentence in citations:
        assert answer[sentence["start"]:sentence["end"]] == sentence["text"]
        assert sentence["supported"] == bool(sentence["sources"])
        for source in sentence["sources"]:
            assert ids[source["passage"]] == source["document_id"]


def test_agent_turn_carries_citations_the_0212_client_parses(agent_stack, rag_db):
    client = LlamaStackClient(base_url=agent_stack.url)
    agent = Agent(client, AgentConfig(
        model=MODEL, instructions="Answer in one sentence.", enable_session_persistence=False,
        toolgroups=[{"name": "builtin::rag/knowledge_search", "args": {"vector_db_ids": [rag_db]}}],
        sampling_params={"strategy": {"type": "greedy"}, "max_tokens": 60},
    ))
    session_id = agent.create_session("cite")
    turn = client.agents.turn.create(agent_id=agent.agent_id, session_id=session_id, stream=False,
                                     messages=[{"role": "user", "content": QUESTION}])
    answer = turn.output_message.content
    searched = [s for s in turn.steps if s.step_type == "tool_execution"]
    citations = turn.model_extra["citations"]
    check_citations(answer, citations, searched)
    cited = {s["document_id"] for c in citations for s in c["sources"]}
    assert "num-1" in cited, citations  # llama3.rst, the document that says it
    stored = client.agents.turn.retrieve(agent_id=agent.agent_id, session_id=session_id, turn_id=turn.turn_id)
    assert stored.model_extra["citations"] == citations

    chunks = agent.create_turn(messages=[{"role": "user", "content": QUESTION}], session_id=session_id, stream=True)
    last = [c.event.payload for c in chunks][-1]
    assert last.event_type == "turn_complete"
    check_citations(last.turn.output_message.content, last.turn.model_extra["citations"],
                    [s for s in last.turn.steps if s.step_type == "tool_execution"])


def test_a_turn_without_knowledge_search_has_no_citations(agent_stack):
    client = LlamaStackClient(base_url=agent_stack.url)
    agent = Agent(client, AgentConfig(model=MODEL, instructions="Be brief.", enable_session_persistence=False, toolgroups=[],
                                      sampling_params={"strategy": {"type": "greedy"}, "max_tokens": 8}))
    session_id = agent.create_session("plain")
    turn = client.agents.turn.create(agent_id=agent.agent_id, session_id=session_id, stream=False,
                                     messages=[{"role": "user", "content": "Say hello."}])
    assert "citations" not in (turn.model_extra or {})


# -- stackrag ask --


def test_ask_prints_each_sentence_with_its_sources(agent_stack, rag_db):
    done = subprocess.run(
        [sys.executable, "-m", "stackrag.cli", "ask", QUESTION, "--vector-db", rag_db, "--max-tokens", "60",
         "--max-chunks", "3", "--url", agent_stack.url],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr
    assert "\nchecked sentence by sentence:\n" in done.stdout, done.stdout
    answer, rest = done.stdout.split("\nchecked sentence by sentence:\n")
    checked, sources = rest.split("sources:\n")
    lines = [line.strip() for line in checked.splitlines() if line.strip()]
    assert lines and all(line[0] in "✓✗" for line in lines), checked
    assert all(("UNSUPPORTED" in line) == line.startswith("✗") for line in lines)
    supported = [line for line in lines if line.startswith("✓")]
    assert any("num-1" in line.split("<-")[1] for line in supported), done.stdout
    listed = [line.split() for line in sources.splitlines() if line.strip()]
    assert listed and all(score.startswith("[") for score, _ in listed), sources
