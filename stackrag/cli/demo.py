"""Where `stackrag run --demo` takes the tutorial's four documents from: a local folder when there is
one (offline), else the tutorial's own GitHub URLs (needs internet)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import click

from .ingest import data_url

if TYPE_CHECKING:
    from ..services.stack import Stack

TUTORIAL_FILES = ("chat.rst", "llama3.rst", "memory_optimizations.rst", "lora_finetune.rst")
TUTORIAL_URL = "https://raw.githubusercontent.com/pytorch/torchtune/main/docs/source/tutorials"
# The workplace keeps a copy beside the repository; an installed package has none there.
DEFAULT_DOCS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "torchtune"


def demo_documents(folder: Path | None) -> tuple[list[dict[str, Any]], str]:
    """The four documents and a phrase saying where they come from. The document ids are the file
    names whatever the source, so a restart with the other source finds them ingested."""
    if folder is None and all((DEFAULT_DOCS / name).is_file() for name in TUTORIAL_FILES):
        folder = DEFAULT_DOCS
    if folder is None:
        return ([{"document_id": name, "content": f"{TUTORIAL_URL}/{name}", "mime_type": "text/x-rst",
                  "metadata": {"source": f"{TUTORIAL_URL}/{name}"}} for name in TUTORIAL_FILES],
                f"{TUTORIAL_URL} (needs internet; pass --demo-docs DIR to work offline)")
    missing = [name for name in TUTORIAL_FILES if not (folder / name).is_file()]
    if missing:
        raise click.ClickException(f"--demo-docs {folder} lacks {', '.join(missing)}")
    documents = []
    for name in TUTORIAL_FILES:
        mime, content = data_url(folder / name)
        documents.append({"document_id": name, "content": content, "mime_type": mime,
                          "metadata": {"source": name}})
    return documents, f"{folder} (offline)"


def demo_seeder(folder: Path | None) -> Callable[[Stack], Awaitable[None]]:
    """The start-up task that fills the demo vector DB (the files are read now, before serving)."""
    from ..services.demo import fill_demo

    documents, origin = demo_documents(folder)

    async def seed(stack: Stack) -> None:
        await fill_demo(stack, documents, origin)

    return seed
