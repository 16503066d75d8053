"""`stackrag run --workers N`: N uvicorn worker processes on one port, each a replica of its own.

Workers are separate processes that uvicorn starts by importing `app` below, so the parent hands
them what it was given (config path, data dir, log level) through the environment; each loads the
config as `stackrag run` would. They share every store, so none may be a store one process owns.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from .. import logs
from ..config import ConfigError, RunConfig, apply_environment, load_config

CONFIG_ENV = "STACKRAG_WORKER_CONFIG"
DATA_DIR_ENV = "STACKRAG_WORKER_DATA_DIR"
LOG_LEVEL_ENV = "STACKRAG_WORKER_LOG_LEVEL"


def check_workers(config: RunConfig, workers: int) -> None:
    """Several workers need stores that several processes can share; say which one is not and why."""
    if workers <= 1:
        return
    problems = []
    for provider in config.providers_of("vector_io"):
        if provider.provider_type.startswith("inline::"):
            problems.append(f"vector_io provider {provider.provider_id!r} is {provider.provider_type} (Milvus Lite: "
                            "one process owns its store file); use remote::milvus with the uri of a Milvus server")
    if config.metadata_store.type != "postgres":
        problems.append(f"metadata_store is {config.metadata_store.type} (one process owns the database file); "
                        "use metadata_store: {type: postgres, host, port, db, user, password}")
    if problems:
        raise ConfigError(f"--workers {workers} runs {workers} processes that must share every store, but "
                          + "; and ".join(problems) + ". See docs/scaling.md.")


def run_workers(config_path: str | None, data_dir: str | None, host: str, port: int, workers: int,
                log_level: str) -> None:
    import uvicorn

    os.environ[CONFIG_ENV] = config_path or ""
    os.environ[DATA_DIR_ENV] = data_dir or ""
    os.environ[LOG_LEVEL_ENV] = log_level
    uvicorn.run("stackrag.api.workers:app", factory=True, workers=workers, host=host, port=port,
                log_level=log_level, timeout_graceful_shutdown=5)


def app() -> FastAPI:
    """The factory each worker process calls."""
    from .app import create_app

    level = os.environ.get(LOG_LEVEL_ENV) or "info"
    logs.configure(level)
    config = apply_environment(load_config(os.environ.get(CONFIG_ENV) or None))
    if os.environ.get(DATA_DIR_ENV):
        config.data_dir = os.environ[DATA_DIR_ENV]
    return create_app(config)
