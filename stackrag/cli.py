"""The `stackrag` command: run the server, and ingest or query through a running one."""

from __future__ import annotations

import base64
import logging
import mimetypes
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from .config import ConfigError, apply_environment, load_config

DEFAULT_URL = "http://127.0.0.1:8321"
TEXT_SUFFIXES = {".rst": "text/x-rst", ".md": "text/markdown", ".markdown": "text/markdown", ".txt": "text/plain"}


@click.group()
@click.version_option(package_name="stackrag")
def main() -> None:
    """stackrag: a Llama Stack compatible RAG server on Milvus."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="run.yaml (optional)")
@click.option("--host", default=None, help="bind address (default 127.0.0.1)")
@click.option("--port", default=None, type=int, help="port (default 8321)")
@click.option("--data-dir", default=None, help="where Milvus Lite and the registry live (default ~/.stackrag)")
@click.option("--log-level", default="info", show_default=True)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="server processes on the port (needs remote::milvus and a postgres metadata_store)")
def run(config_path: str | None, host: str | None, port: int | None, data_dir: str | None, log_level: str,
        workers: int) -> None:
    """Start the server (embedded defaults when no config is given)."""
    import uvicorn

    from .api.app import create_app
    from .api.auth import is_loopback
    from .api.workers import check_workers, run_workers

    try:
        config = load_config(config_path)
        apply_environment(config)
        check_workers(config, workers)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if data_dir:
        config.data_dir = data_dir
    host = host or config.server.host
    port = port or config.server.port
    if not config.server.active_keys() and not is_loopback(host) and not config.server.allow_unauthenticated:
        raise click.ClickException(
            f"refusing to serve on {host} without API keys: anyone who can reach it could read and change "
            "the knowledge base. Set STACKRAG_API_KEY (or server.api_keys in the config), or set "
            "server.allow_unauthenticated: true if something in front of stackrag checks access.")
    if workers > 1:
        run_workers(config_path, data_dir, host, port, workers, log_level)
        return
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=httpx.Timeout(600.0, connect=10.0))


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise click.ClickException(f"{response.request.method} {response.request.url.path}: "
                                   f"{response.status_code} {detail}")
    return response.json() if response.content else None


def _document(source: str) -> dict[str, Any]:
    """A RAG document for a URL (fetched by the server) or a local file (sent inline as a data: URL)."""
    if source.startswith(("http://", "https://")):
        return {"document_id": source, "content": source, "metadata": {"source": source}}
    path = Path(source).expanduser()
    if not path.is_file():
        raise click.ClickException(f"{source}: no such file (give a file path or an http(s) URL)")
    mime = TEXT_SUFFIXES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "text/plain"
    data = base64.b64encode(path.read_bytes()).decode()
    return {
        "document_id": str(path.resolve()),
        "content": f"data:{mime};base64,{data}",
        "mime_type": mime,
        "metadata": {"source": path.name},
    }


def _expand(sources: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            out.extend(str(p) for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("."))
        else:
            out.append(source)
    return out


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--vector-db", "vector_db", required=True, help="vector DB id (created if missing)")
@click.option("--url", default=DEFAULT_URL, show_default=True, envvar="STACKRAG_URL")
@click.option("--chunk-size", default=512, show_default=True, help="chunk size in tokens")
@click.option("--embedding-model", default="all-MiniLM-L6-v2", show_default=True)
def ingest(sources: tuple[str, ...], vector_db: str, url: str, chunk_size: int, embedding_model: str) -> None:
    """Add files, folders or URLs to a vector DB, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    files = _expand(sources)
    with _client(url) as client:
        existing = client.get(f"/v1/vector-dbs/{vector_db}")
        if existing.status_code == 404:
            _check(client.post("/v1/vector-dbs", json={"vector_db_id": vector_db, "embedding_model": embedding_model}))
            click.echo(f"created vector DB {vector_db}")
        else:
            _check(existing)
        chunks = 0
        started = time.perf_counter()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[chunks]} chunks, {task.fields[rate]:.1f} chunks/s"), TimeElapsedColumn())
        with Progress(*columns) as progress:
            task = progress.add_task("documents", total=len(files), chunks=0, rate=0.0)
            for source in files:
                body = {"documents": [_document(source)], "vector_db_id": vector_db, "chunk_size_in_tokens": chunk_size}
                response = client.post("/v1/tool-runtime/rag-tool/insert", json=body)
                _check(response)
                chunks += int(response.headers.get("x-stackrag-chunks", "0"))
                rate = chunks / max(time.perf_counter() - started, 1e-6)
                progress.update(task, advance=1, chunks=chunks, rate=rate)
    click.echo(f"ingested {len(files)} documents, {chunks} chunks in {time.perf_counter() - started:.1f} s")


@main.command()
@click.argument("text")
@click.option("--vector-db", "vector_db", required=True)
@click.option("--url", default=DEFAULT_URL, show_default=True, envvar="STACKRAG_URL")
@click.option("--max-chunks", default=5, show_default=True)
@click.option("--mode", type=click.Choice(["vector", "keyword", "hybrid"]), default="vector", show_default=True)
def query(text: str, vector_db: str, url: str, max_chunks: int, mode: str) -> None:
    """Search a vector DB and print the best chunks with their scores."""
    with _client(url) as client:
        result = _check(client.post("/v1/vector-io/query", json={
            "vector_db_id": vector_db, "query": text, "params": {"max_chunks": max_chunks, "mode": mode},
        }))
    if not result["chunks"]:
        click.echo("no matching chunks")
        return
    for rank, (chunk, score) in enumerate(zip(result["chunks"], result["scores"]), start=1):
        doc = chunk.get("metadata", {}).get("document_id", "?")
        content = chunk["content"] if isinstance(chunk["content"], str) else str(chunk["content"])
        snippet = " ".join(content.split())[:300]
        click.echo(f"{rank}. [{score:.3f}] {doc}\n   {snippet}")


@main.command("eval")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False))
@click.option("--corpus", required=True, type=click.Path(exists=True, file_okay=False),
              help="folder of documents; a document's id is its path in the folder")
@click.option("--url", default=DEFAULT_URL, show_default=True, envvar="STACKRAG_URL")
@click.option("--mode", type=click.Choice(["vector", "keyword", "hybrid"]), default="hybrid", show_default=True)
@click.option("--chunk-size", default=512, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="also write the full result here")
@click.option("--answers", "answer_model", metavar="MODEL",
              help="also ask an agent on this chat model every question and score its answers (slow)")
def evaluate(questions: str, corpus: str, url: str, mode: str, chunk_size: int, json_out: str | None,
             answer_model: str | None) -> None:
    """Measure retrieval: recall@k, MRR@10, nDCG@10 per question kind, and latency; with --answers,
    the answers too (key-fact recall, declined questions)."""
    import json
    import uuid

    from rich.console import Console
    from rich.table import Table

    from .eval import load_questions, run_answer_eval, run_eval

    vector_db_id = f"eval-{uuid.uuid4().hex[:10]}"
    try:
        result = run_eval(url, Path(questions), Path(corpus), mode=mode, chunk_size=chunk_size,
                          vector_db_id=vector_db_id, keep=bool(answer_model),
                          progress=lambda done, total: click.echo(f"ingested {done}/{total} documents", err=True))
        if answer_model:
            try:
                result["answers"] = run_answer_eval(
                    url, load_questions(Path(questions)), vector_db_id, answer_model,
                    progress=lambda done, total: click.echo(f"answered {done}/{total} questions", err=True))
            finally:
                with _client(url) as client:
                    client.delete(f"/v1/vector-dbs/{vector_db_id}")
    except (httpx.HTTPError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"retrieval ({mode}, {chunk_size}-token chunks, {result['ingestion']['chunks']} chunks)")
    metrics = [k for k in result["overall"] if k != "n"]
    for column in ["kind", "n", *metrics]:
        table.add_column(column, justify="right" if column != "kind" else "left")
    for kind, row in [*result["by_kind"].items(), ("all", result["overall"])]:
        table.add_row(kind, str(row["n"]), *(f"{row[m]:.3f}" for m in metrics))
    Console().print(table)
    click.echo(f"latency p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms; "
               f"median top score: answerable {result['top_score']['answerable_median']}, "
               f"unanswerable {result['top_score']['unanswerable_median']}")
    answers = result.get("answers")
    if answers:
        ok, no = answers["answerable"], answers["unanswerable"]
        click.echo(f"answers ({answers['model']}): key-fact recall {ok['fact_recall']} over {ok['n']} questions, "
                   f"{ok['declined']} of them declined; {no['declined']}/{no['n']} unanswerable declined; "
                   f"turn p50 {answers['turn_seconds_p50']} s")
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
