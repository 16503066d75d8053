"""`stackrag query`: the best chunks of a vector DB for a text, with their scores."""

from __future__ import annotations

import click

from .client import connect, url_option


@click.command()
@click.argument("text")
@click.option("--vector-db", "vector_db", required=True)
@url_option
@click.option("--max-chunks", default=5, show_default=True)
@click.option("--mode", type=click.Choice(["vector", "keyword", "hybrid"]), default="vector", show_default=True)
def query(text: str, vector_db: str, url: str, max_chunks: int, mode: str) -> None:
    """Search a vector DB and print the best chunks with their scores."""
    with connect(url) as client:
        result = client.call("POST", "/v1/vector-io/query", json={
            "vector_db_id": vector_db, "query": text, "params": {"max_chunks": max_chunks, "mode": mode},
        })
    if not result["chunks"]:
        click.echo("no matching chunks")
        return
    for rank, (chunk, score) in enumerate(zip(result["chunks"], result["scores"]), start=1):
        doc = chunk.get("metadata", {}).get("document_id", "?")
        content = chunk["content"] if isinstance(chunk["content"], str) else str(chunk["content"])
        snippet = " ".join(content.split())[:300]
        click.echo(f"{rank}. [{score:.3f}] {doc}\n   {snippet}")
