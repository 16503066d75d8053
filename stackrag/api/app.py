"""The FastAPI application: routes, error mapping, and the Stack's life cycle."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..config import RunConfig
from ..services import stack as services
from ..services.stack import Stack, build_stack
from ..errors import StackError
from . import access, openapi
from .auth import ApiKeyAuth
from .errors import error_response, validation_response
from .routes import (
    agents,
    inference,
    inspect,
    models,
    openai_files,
    openai_inference,
    openai_responses,
    openai_vector_stores,
    playground,
    rag_tool,
    tool_runtime,
    tools,
    vector_dbs,
    vector_io,
)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_ERRORS = 20


OnReady = Callable[[Stack], Awaitable[None]]


def create_app(config: RunConfig, stack: Stack | None = None, on_ready: OnReady | None = None) -> FastAPI:
    """`on_ready` runs as a background task once the stack is up (the demo's ingestion): the server
    answers meanwhile, and the task is cancelled at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "stack", None) is None:
            app.state.stack = await asyncio.to_thread(build_stack, config)
        await asyncio.to_thread(services.start, app.state.stack)
        _announce_keys(config, app.state.stack)
        await app.state.stack.replica.start()
        log.info("stackrag ready (data dir %s)", config.resolved_data_dir())
        task = asyncio.create_task(on_ready(app.state.stack)) if on_ready is not None else None
        expiry = asyncio.create_task(app.state.stack.vector_stores.expiry_loop())
        try:
            yield
        finally:
            for running in (task, expiry):
                if running is not None:
                    running.cancel()
            await asyncio.gather(*(t for t in (task, expiry) if t is not None), return_exceptions=True)
            await app.state.stack.replica.stop()
            await asyncio.to_thread(services.close, app.state.stack)

    app = FastAPI(
        title="stackrag",
        version=__version__,
        description="A Llama Stack compatible RAG server on Milvus.",
        lifespan=lifespan,
        # Once the route is known: a read-only key may not reach an operation declared a write.
        dependencies=[Depends(access.enforce)],
    )
    app.state.stack = stack
    openapi.install(app)
    for module in (inspect, models, vector_dbs, vector_io, rag_tool, tools, tool_runtime, inference, agents):
        app.include_router(module.router)
    # The OpenAI-compatible routes live under /v1 (clients 0.4+) and /v1/openai/v1 (0.2.x era).
    for prefix in ("/v1", "/v1/openai/v1"):
        for module in (openai_inference, openai_files, openai_vector_stores, openai_responses):
            app.include_router(module.router, prefix=prefix)
    app.include_router(models.openai_router, prefix="/v1/openai/v1")
    app.include_router(playground.router)
    app.add_exception_handler(StackError, _stack_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_REQUEST_BYTES)
    # Added last, so it runs first: a request without a valid key is refused before anything else.
    app.add_middleware(ApiKeyAuth)
    return app


def _announce_keys(config: RunConfig, stack: Stack) -> None:
    keys = config.server.active_keys()
    stored = [k for k in stack.keys.list() if not k.get("revoked_at")]
    if keys or stored:
        log.info("API keys required (%d read-write, %d read-only from the config; %d in the registry, %d scoped)",
                 sum(k.access == "read_write" for k in keys), sum(k.access == "read_only" for k in keys),
                 len(stored), sum(k.get("vector_dbs") is not None for k in stored))
    else:
        log.warning("AUTHENTICATION IS OFF: anyone who can reach this server can read and change the knowledge "
                    "base. Set STACKRAG_API_KEY (or server.api_keys in the config), or make keys with "
                    "`stackrag keys create`, to require API keys.")


async def _stack_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StackError)
    if exc.status_code >= 500:
        log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
    return error_response(exc.message, exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # A hostile body can carry thousands of errors: the first few say what to fix.
    return validation_response([{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                                for e in exc.errors()[:MAX_ERRORS]])


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "Internal server error: An unexpected error occurred."}, status_code=500)


class BodySizeLimit:
    """Refuse request bodies over the limit with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing untouched and is rendered as JSON.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body is larger than {self.max_bytes} bytes; send less per request"

    async def _refuse(self, send: Send) -> None:
        response = error_response(self._message(), 413)
        await response({"type": "http"}, _empty_receive, send)


async def _empty_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}
