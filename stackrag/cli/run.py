"""`stackrag run`: the server, optionally with the demo knowledge base."""

from __future__ import annotations

from pathlib import Path

import click

from .. import logs
from ..config import ConfigError, apply_environment, load_config


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="run.yaml (optional)")
@click.option("--host", default=None, help="bind address (default 127.0.0.1)")
@click.option("--port", default=None, type=int, help="port (default 8321)")
@click.option("--data-dir", default=None, help="where Milvus Lite and the registry live (default ~/.stackrag)")
@click.option("--log-level", default="info", show_default=True)
@click.option("--demo", is_flag=True,
              help="also fill the vector DB `demo` with the tutorial's four documents (once, in the background)")
@click.option("--demo-docs", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="folder holding chat.rst, llama3.rst, memory_optimizations.rst, lora_finetune.rst "
                   "(default: ../shared/corpus/torchtune beside the repo, else GitHub)")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="server processes on the port (needs remote::milvus and a postgres metadata_store)")
def run(config_path: str | None, host: str | None, port: int | None, data_dir: str | None, log_level: str,
        demo: bool, demo_docs: Path | None, workers: int) -> None:
    """Start the server (embedded defaults when no config is given)."""
    import uvicorn

    from ..api.app import create_app
    from ..api.auth import is_loopback
    from ..api.workers import check_workers, run_workers

    try:
        config = load_config(config_path)
        config = apply_environment(config)
        check_workers(config, workers)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if data_dir:
        config.data_dir = data_dir
    host = host or config.server.host
    port = port or config.server.port
    if (not is_loopback(host) and not config.server.allow_unauthenticated and not config.server.active_keys()
            and not _stored_keys(config)):
        raise click.ClickException(
            f"refusing to serve on {host} without API keys: anyone who can reach it could read and change "
            "the knowledge base. Set STACKRAG_API_KEY (or server.api_keys in the config), or set "
            "server.allow_unauthenticated: true if something in front of stackrag checks access.")
    logs.configure(log_level)
    if workers > 1:
        if demo or demo_docs:
            raise click.ClickException("--demo fills the embedded store of one process; run it without --workers")
        run_workers(config_path, data_dir, host, port, workers, log_level)
        return
    on_ready = None
    if demo or demo_docs:
        from .demo import demo_seeder

        on_ready = demo_seeder(demo_docs)
    from ..services.stack import build_stack
    from ..errors import StackError

    try:
        # Built here, not in the app's start-up, so that a store that cannot open (a db_path another
        # server holds, a missing engine) ends `run` with its message instead of a traceback.
        stack = build_stack(config)
    except StackError as exc:
        raise click.ClickException(exc.message) from exc
    app = create_app(config, stack=stack, on_ready=on_ready)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def _stored_keys(config) -> bool:
    """Whether the registry holds an active key (`stackrag keys create`)."""
    from ..services.keys import KeyService
    from ..storage import open_storage

    storage = open_storage(config)
    try:
        return any(not k.get("revoked_at") for k in KeyService(storage.registry).list())
    finally:
        storage.close()
