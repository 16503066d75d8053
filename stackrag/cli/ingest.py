"""`stackrag ingest`: files, folders and URLs into a vector DB, one document per request, so one bad
document is reported and the others still go in."""

from __future__ import annotations

import base64
import mimetypes
import time
from pathlib import Path
from typing import Any

import click

from .client import ApiError, Client, connect, url_option

TEXT_SUFFIXES = {".rst": "text/x-rst", ".md": "text/markdown", ".markdown": "text/markdown", ".txt": "text/plain"}


def data_url(path: Path) -> tuple[str, str]:
    """(mime type, data: URL) of a local file; the server never reads local paths itself."""
    mime = TEXT_SUFFIXES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "text/plain"
    return mime, f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


class LocalFileError(click.ClickException):
    """A local file that cannot be sent: missing or unreadable."""


def document(source: str) -> dict[str, Any]:
    """A RAG document for a URL (fetched by the server) or a local file (sent inline as a data: URL)."""
    if is_url(source):
        return {"document_id": source, "content": source, "metadata": {"source": source}}
    path = Path(source).expanduser()
    if not path.is_file():
        raise LocalFileError(f"{source}: no such file (give a file path or an http(s) URL)")
    try:
        mime, content = data_url(path)
    except OSError as exc:
        raise LocalFileError(f"{source}: cannot read it ({exc.strerror})") from exc
    return {"document_id": str(path.resolve()), "content": content, "mime_type": mime,
            "metadata": {"source": path.name}}


def expand(sources: tuple[str, ...]) -> list[str]:
    """Folders become the files in them (hidden ones skipped); anything else is kept as given."""
    out: list[str] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            out.extend(str(p) for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("."))
        else:
            out.append(source)
    return out


def ensure_vector_db(client: Client, vector_db: str, embedding_model: str) -> bool:
    """True when the vector DB had to be created."""
    if client.vector_db_exists(vector_db):
        return False
    client.call("POST", "/v1/vector-dbs", json={"vector_db_id": vector_db, "embedding_model": embedding_model})
    return True


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--vector-db", "vector_db", required=True, help="vector DB id (created if missing)")
@url_option
@click.option("--chunk-size", default=512, show_default=True, help="chunk size in tokens")
@click.option("--embedding-model", default="all-MiniLM-L6-v2", show_default=True)
def ingest(sources: tuple[str, ...], vector_db: str, url: str, chunk_size: int, embedding_model: str) -> None:
    """Add files, folders or URLs to a vector DB, with a progress bar.

    A document that fails (unreadable, unreachable URL, no text) is reported and skipped; the exit
    code is 1 when any failed."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    files = expand(sources)
    if not any(is_url(s) or Path(s).expanduser().is_file() for s in files):
        # Nothing could go in: say so before creating an empty vector DB.
        raise click.ClickException("\n".join(f"{s}: no such file (give a file path or an http(s) URL)"
                                             for s in files) or "no files in the given folders")
    failed: list[str] = []
    chunks = 0
    with connect(url) as client:
        if ensure_vector_db(client, vector_db, embedding_model):
            click.echo(f"created vector DB {vector_db}")
        started = time.perf_counter()
        # The bar goes to stderr, as progress does, so stdout holds only the outcome.
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("docs, {task.fields[chunks]} chunks, {task.fields[rate]:.1f} chunks/s"),
                   TimeElapsedColumn(), TextColumn("{task.fields[current]}"))
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task("ingesting", total=len(files), chunks=0, rate=0.0, current="")
            for source in files:
                progress.update(task, current=Path(source).name)
                # A server that is gone or times out ends the command (ClickException from the
                # client): every other document would fail the same way.
                error = None
                try:
                    doc = document(source)
                    response = client.post("/v1/tool-runtime/rag-tool/insert", json={
                        "documents": [doc], "vector_db_id": vector_db, "chunk_size_in_tokens": chunk_size})
                    chunks += int(response.headers.get("x-stackrag-chunks", "0"))
                except LocalFileError as exc:
                    error = exc.message
                except ApiError as exc:
                    # The server names the document by its position and id; one per request, the source says it.
                    reason = exc.detail.removeprefix(f"documents[0] ({doc['document_id']})").lstrip(": ")
                    error = f"{source}: {reason}"
                if error:
                    failed.append(source)
                    progress.console.print(f"✗ {error}", highlight=False, markup=False, soft_wrap=True)
                rate = chunks / max(time.perf_counter() - started, 1e-6)
                progress.update(task, advance=1, chunks=chunks, rate=rate, current="")
    seconds = time.perf_counter() - started
    done = len(files) - len(failed)
    click.echo(f"ingested {done} documents, {chunks} chunks in {seconds:.1f} s "
               f"({chunks / max(seconds, 1e-6):.1f} chunks/s)")
    if failed:
        lines = "\n".join(f"  {source}" for source in failed)
        raise click.ClickException(f"{len(failed)} of {len(files)} documents failed (reasons above):\n{lines}")
