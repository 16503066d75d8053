"""`stackrag ask` (one question) and `stackrag chat` (a conversation): a RAG agent over one vector DB,
its answer streamed as it is generated, then each sentence with the documents that support it (or
marked when none does), then the documents it was given with their scores."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import click
import httpx

from .client import Client, broken, connect, url_option

INSTRUCTIONS = "You are a helpful assistant. Answer from the documents, briefly."


@dataclass
class Answer:
    text: str = ""
    # document id -> best score among its retrieved chunks, in the order retrieval ranked them
    sources: dict[str, float] = field(default_factory=dict)
    # the turn's `citations`: each sentence with its supporting passages (None: the server sent none)
    citations: list[dict[str, Any]] | None = None

    def add_sources(self, metadata: dict[str, Any]) -> None:
        for document_id, score in zip(metadata.get("document_ids") or [], metadata.get("scores") or []):
            self.sources[document_id] = max(score, self.sources.get(document_id, score))


def lines_of(response: httpx.Response) -> Iterator[str]:
    try:
        yield from response.iter_lines()
    except httpx.TransportError as exc:
        raise broken(response.request.url, exc) from exc


def sse_payloads(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Event payloads of a streamed turn (`data: {"event": {"payload": ...}}` lines)."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = json.loads(line[5:])
        if "error" in data:
            raise click.ClickException(f"the turn failed on the server: {data['error'].get('message')}")
        yield data["event"]["payload"]


def default_model(client: Client) -> str:
    models = client.call("GET", "/v1/models")["data"]
    llms = [m["identifier"] for m in models if m.get("model_type") == "llm"]
    if not llms:
        raise click.ClickException("the server has no chat model (model_type llm); register one or pass --model")
    return llms[0]


def check_vector_db(client: Client, vector_db: str) -> None:
    if not client.vector_db_exists(vector_db):
        raise click.ClickException(
            f"vector DB {vector_db!r} does not exist at {client.base_url}; `stackrag vector-dbs list` shows "
            f"the ones there, `stackrag ingest FILES --vector-db {vector_db}` creates it")


class RagSession:
    """One agent with builtin::rag over the vector DB and one session of it: the server keeps the
    conversation, so a follow-up question can refer to earlier turns."""

    def __init__(self, client: Client, vector_db: str, model: str, max_tokens: int, max_chunks: int):
        self.client = client
        rag_args = {"vector_db_ids": [vector_db], "query_config": {"max_chunks": max_chunks}}
        agent_config = {
            "model": model, "instructions": INSTRUCTIONS, "enable_session_persistence": False,
            "toolgroups": [{"name": "builtin::rag/knowledge_search", "args": rag_args}],
            "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": max_tokens},
        }
        self.agent_id = client.call("POST", "/v1/agents", json={"agent_config": agent_config})["agent_id"]
        self.session_id = client.call("POST", f"/v1/agents/{self.agent_id}/session",
                                      json={"session_name": "stackrag-cli"})["session_id"]

    def turn(self, question: str, on_text: Callable[[str], None]) -> Answer:
        """Ask, calling `on_text` with each piece of the answer as it arrives. Interrupting it
        (Ctrl-C) closes the stream; the server then stops generating and keeps no half turn."""
        answer = Answer()
        body = {"messages": [{"role": "user", "content": question}], "stream": True}
        path = f"/v1/agents/{self.agent_id}/session/{self.session_id}/turn"
        with self.client.stream("POST", path, json=body) as response:
            for payload in sse_payloads(lines_of(response)):
                kind = payload.get("event_type")
                delta = payload.get("delta") or {}
                if kind == "step_progress" and payload.get("step_type") == "inference" and delta.get("type") == "text":
                    answer.text += delta["text"]
                    on_text(delta["text"])
                elif kind == "step_complete" and payload.get("step_type") == "tool_execution":
                    for result in payload["step_details"].get("tool_responses") or []:
                        answer.add_sources(result.get("metadata") or {})
                elif kind == "turn_complete":
                    answer.citations = payload["turn"].get("citations")
        return answer

    def close(self) -> None:
        # The agent was made for this command only; leave the server as it was.
        try:
            self.client.delete(f"/v1/agents/{self.agent_id}")
        except click.ClickException:
            pass


def open_session(client: Client, vector_db: str, model: str | None, max_tokens: int, max_chunks: int) -> RagSession:
    check_vector_db(client, vector_db)
    return RagSession(client, vector_db, model or default_model(client), max_tokens, max_chunks)


def print_sources(answer: Answer) -> None:
    if not answer.sources:
        click.echo("sources: none (nothing in the vector DB matched the question)")
        return
    click.echo("sources:")
    for document_id, score in answer.sources.items():
        click.echo(f"  [{score:.4f}] {document_id}")


def print_citations(answer: Answer) -> None:
    """Sentence by sentence, so a reader knows which claims to check: ✗ where no passage supports one."""
    if answer.citations is None:
        return
    click.echo("checked sentence by sentence:")
    if not answer.citations:
        click.echo("  (no sentence of three words or more to check)")
    for sentence in answer.citations:
        text = " ".join(sentence["text"].split())
        text = text if len(text) <= 100 else text[:97] + "..."
        documents = list(dict.fromkeys(s["document_id"] for s in sentence["sources"]))
        if sentence["supported"]:
            click.echo(f"  ✓ {text}  <- {', '.join(documents)}")
        else:
            click.echo(f"  ✗ {text}  <- UNSUPPORTED: no passage says this")


def echo_text(text: str) -> None:
    click.echo(text, nl=False)


common_options = [
    click.option("--vector-db", "vector_db", required=True, help="the vector DB to answer from"),
    click.option("--model", default=None, help="chat model id (default: the server's first llm)"),
    click.option("--max-tokens", default=512, show_default=True, help="longest answer, in tokens"),
    # Each passage is ~250 tokens the model reads before answering: fewer is faster on a small CPU.
    click.option("--max-chunks", default=5, show_default=True, help="passages retrieved per question"),
    url_option,
]


def with_common_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(common_options):
        command = option(command)
    return command


@click.command()
@click.argument("question")
@with_common_options
def ask(question: str, vector_db: str, model: str | None, max_tokens: int, max_chunks: int, url: str) -> None:
    """Answer QUESTION from a vector DB: the answer streams, then its sources."""
    with connect(url) as client:
        session = open_session(client, vector_db, model, max_tokens, max_chunks)
        try:
            answer = session.turn(question, echo_text)
        finally:
            session.close()
    click.echo("\n")
    print_citations(answer)
    print_sources(answer)


@click.command()
@with_common_options
def chat(vector_db: str, model: str | None, max_tokens: int, max_chunks: int, url: str) -> None:
    """Talk with a vector DB: one conversation, follow-up questions welcome. /quit or Ctrl-D ends it;
    Ctrl-C stops an answer."""
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:  # not on every platform; input() works without it
        pass
    with connect(url) as client:
        session = open_session(client, vector_db, model, max_tokens, max_chunks)
        click.echo(f"chatting with vector DB {vector_db} (/quit to leave)")
        try:
            while True:
                try:
                    question = input("you> ").strip()
                except (EOFError, KeyboardInterrupt):
                    click.echo()
                    return
                if question in ("/quit", "/exit"):
                    return
                if not question:
                    continue
                try:
                    answer = session.turn(question, echo_text)
                except KeyboardInterrupt:
                    click.echo("\n[answer cancelled]\n")
                    continue
                click.echo()
                print_citations(answer)
                print_sources(answer)
                click.echo()
        finally:
            session.close()
