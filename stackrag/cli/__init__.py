"""The `stackrag` command: run the server (optionally with the demo knowledge base), and use a
running one: ingest, query, ask, chat, list and delete vector DBs, evaluate; `doctor` checks the
install. One module per command family; every request goes through client.py."""

from __future__ import annotations

import click

from .ask import ask, chat
from .doctor import doctor
from .evaluate import evaluate
from .ingest import ingest
from .keys import keys
from .query import query
from .run import run
from .vector_dbs import vector_dbs


@click.group()
@click.version_option(package_name="stackrag")
def main() -> None:
    """stackrag: a Llama Stack compatible RAG server on Milvus."""


for command in (run, ingest, query, ask, chat, vector_dbs, doctor, evaluate, keys):
    main.add_command(command)
