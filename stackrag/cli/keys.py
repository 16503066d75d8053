"""`stackrag keys create|list|revoke`: API keys kept in the registry (services/keys.py).

These work on the metadata store itself (the SQLite file of the data dir, or the configured
PostgreSQL), not through a server, so the first key can be made before any key exists; a running
server sees a new or revoked key within seconds, without a restart.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import click

from ..config import ConfigError, apply_environment, load_config
from ..errors import StackError


@contextmanager
def key_service(config_path: str | None, data_dir: str | None) -> Iterator[object]:
    from ..services.keys import KeyService
    from ..storage import open_storage

    try:
        config = apply_environment(load_config(config_path))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if data_dir:
        config.data_dir = data_dir
    try:
        storage = open_storage(config)
    except StackError as exc:
        raise click.ClickException(exc.message) from exc
    try:
        yield KeyService(storage.registry)
    finally:
        storage.close()


def store_options(command):
    command = click.option("--data-dir", default=None, help="as given to `stackrag run`")(command)
    return click.option("--config", "config_path", type=click.Path(dir_okay=False),
                        help="run.yaml (its metadata_store holds the keys)")(command)


@click.group()
def keys() -> None:
    """Make, list and revoke API keys, optionally limited to some vector DBs / vector stores."""


@keys.command("create")
@click.option("--vector-db", "vector_dbs", multiple=True,
              help="limit the key to this vector DB or vector store (repeat for several); it also sees what it creates")
@click.option("--scoped", is_flag=True, help="limit the key to what it creates (with no --vector-db)")
@click.option("--read-only", is_flag=True, help="query and chat only: no insert, register, upload or delete")
@click.option("--name", default=None, help="a name to recognise it by")
@store_options
def create(vector_dbs: tuple[str, ...], scoped: bool, read_only: bool, name: str | None, config_path: str | None,
           data_dir: str | None) -> None:
    """Make a key; its secret is printed once, now."""
    scope = list(vector_dbs) if vector_dbs or scoped else None
    with key_service(config_path, data_dir) as service:
        record, secret = service.create("read_only" if read_only else "read_write", scope, name)
    click.echo(secret)
    what = "every vector DB" if scope is None else (", ".join(scope) or "only what it creates")
    click.echo(f"key {record['id']} ({record['access']}, {what}): the secret above is shown only now", err=True)


@keys.command("list")
@store_options
def list_keys(config_path: str | None, data_dir: str | None) -> None:
    """The keys (never their secrets)."""
    with key_service(config_path, data_dir) as service:
        found = service.list()
    if not found:
        click.echo("no keys in the registry (keys from the config or STACKRAG_API_KEY are not listed here)")
        return
    for key in found:
        scope = "all vector DBs" if key["vector_dbs"] is None else ", ".join(key["vector_dbs"]) or "(own only)"
        revoked = key["revoked_at"]
        state = f"revoked {time.strftime('%Y-%m-%d %H:%M', time.gmtime(revoked))}" if revoked else "active"
        click.echo(f"{key['id']}  {key['name']}  {key['access']}  {state}  {scope}")


@keys.command("revoke")
@click.argument("key_id")
@store_options
def revoke(key_id: str, config_path: str | None, data_dir: str | None) -> None:
    """Revoke a key; servers refuse it within seconds."""
    with key_service(config_path, data_dir) as service:
        try:
            service.revoke(key_id)
        except StackError as exc:
            raise click.ClickException(exc.message) from exc
    click.echo(f"revoked {key_id}")
