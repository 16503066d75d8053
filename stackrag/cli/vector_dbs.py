"""`stackrag vector-dbs list|delete`: the knowledge bases of a running server."""

from __future__ import annotations

import click

from .client import connect, url_option


@click.group("vector-dbs")
def vector_dbs() -> None:
    """List and delete vector DBs."""


@vector_dbs.command("list")
@url_option
def list_vector_dbs(url: str) -> None:
    """The vector DBs with their embedding model, dimension, provider and chunk count."""
    from rich.console import Console
    from rich.table import Table

    with connect(url) as client:
        found = client.call("GET", "/v1/vector-dbs", params={"chunk_counts": "true"})["data"]
    if not found:
        click.echo("no vector DBs yet; `stackrag ingest FILES --vector-db ID` creates one")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "embedding model", "dimension", "provider", "chunks"):
        table.add_column(column, justify="right" if column in ("dimension", "chunks") else "left")
    for db in sorted(found, key=lambda d: d["identifier"]):
        chunks = db.get("chunk_count")
        table.add_row(db["identifier"], db["embedding_model"], str(db["embedding_dimension"]), db["provider_id"],
                      "?" if chunks is None else str(chunks))
    # A wide console: ids are often longer than a pipe's default 80 columns allow.
    Console(width=200).print(table)


@vector_dbs.command("delete")
@click.argument("vector_db")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@url_option
def delete_vector_db(vector_db: str, yes: bool, url: str) -> None:
    """Delete a vector DB and every chunk in it."""
    with connect(url) as client:
        client.call("GET", f"/v1/vector-dbs/{vector_db}")  # a clear 404 before asking anything
        if not yes:
            click.confirm(f"delete vector DB {vector_db} and all its chunks?", abort=True)
        client.call("DELETE", f"/v1/vector-dbs/{vector_db}")
    click.echo(f"deleted vector DB {vector_db}")
