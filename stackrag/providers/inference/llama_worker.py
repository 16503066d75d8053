"""The local chat model's own process: one GGUF file served over an OpenAI-compatible HTTP API.

`python -m stackrag.providers.inference.llama_worker --model X.gguf --variant icelake` loads the
chosen llama.cpp CPU variant, loads the model, answers one token as a check, then prints one JSON
line on stdout (`{"ready": true, "port": N, ...}`) and serves on 127.0.0.1:N. Every request must
carry `Authorization: Bearer <token>` with the token the supervisor gave in STACKRAG_LLM_TOKEN.
A native fault here (an instruction the CPU traps, a bad file) ends this process only; the
supervisor (model_process.py) sees it and restarts it. The server reaches it through the same
OpenAI-compatible adapter as any remote model.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

from .json_grammar import GrammarError, grammar_for

TOKEN_ENV = "STACKRAG_LLM_TOKEN"
CHECK_PROMPT = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep. " * 6
# Test hook: the name of a variant whose check dies of SIGILL, as on a CPU that traps it.
TRAP_ENV = "STACKRAG_LLM_TRAP_VARIANT"


def variant_dir() -> Path:
    """Where llama-cpp-python keeps its libraries (and, in the portable build, the CPU variants)."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llama-cpp-python is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "lib"


def installed_variants(directory: Path | None = None) -> list[str]:
    """The CPU variants of the portable build (`libggml-cpu-<name>.so`); empty for a build with
    one CPU backend linked in (llama-cpp-python's default, native to the machine that built it)."""
    directory = directory or variant_dir()
    prefix, suffix = "libggml-cpu-", ".so"
    return sorted(p.name[len(prefix):-len(suffix)] for p in directory.glob(f"{prefix}*{suffix}"))


def load_variant(name: str) -> None:
    """Register one CPU variant with ggml before llama.cpp looks for backends (it then loads no other)."""
    directory = variant_dir()
    ggml = ctypes.CDLL(str(directory / "libggml.so"))
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    if not ggml.ggml_backend_load(str(directory / f"libggml-cpu-{name}.so").encode()):
        raise RuntimeError(f"llama.cpp refused its CPU variant {name!r} on this machine")


class Engine:
    """One loaded GGUF. A llama.cpp context is not thread-safe: one generation at a time."""

    def __init__(self, path: Path, n_ctx: int, threads: int):
        from llama_cpp import Llama

        self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_batch=512, verbose=False)
        self.n_ctx = self._llm.n_ctx()
        self._lock = threading.Lock()

    def check(self) -> None:
        """Read a prompt of ~100 tokens and write a few: the batched kernels of prompt reading and the
        vector kernels of generation each run here once, not first in a user's request. (A VM seen
        here ran AMX's instructions one by one but trapped llama.cpp's AMX matrix kernel, which only
        a prompt of many tokens reaches.)"""
        with self._lock:
            self._llm.create_completion(CHECK_PROMPT, max_tokens=4, temperature=0.0)
            self._llm.reset()

    def count_text(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False))

    def count_messages(self, messages: list[dict[str, Any]]) -> int:
        text = "".join(f"<|im_start|>{m.get('role')}\n{_text(m.get('content'))}<|im_end|>\n" for m in messages)
        # Tool calls and definitions are counted roughly by their JSON length.
        extra = sum(len(str(m.get("tool_calls", ""))) // 3 for m in messages)
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) + extra

    def grammar(self, body: dict[str, Any]) -> Any:
        """The grammar of the body's response_format (None: plain text); raises GrammarError."""
        if body.get("response_format") is not None and body.get("tools"):
            # Held to a JSON grammar, the model could never write a tool call.
            raise GrammarError("the local model cannot both be offered tools and held to a response_format "
                               "in one request; send one of them")
        return grammar_for(body.get("response_format"), self._llm._model.vocab)

    def chat(self, body: dict[str, Any], grammar: Any = None) -> Iterator[dict[str, Any]]:
        tools = body.get("tools") or None
        return self._llm.create_chat_completion(
            messages=body["messages"],
            tools=tools,
            tool_choice=body.get("tool_choice") if tools else None,
            temperature=float(body.get("temperature") or 0.0),
            top_p=float(body["top_p"]) if body.get("top_p") is not None else 0.95,
            max_tokens=int(body.get("max_tokens") or max(256, min(1024, self.n_ctx // 4))),
            stop=body.get("stop"),
            grammar=grammar,
            stream=True,
        )

    def complete(self, body: dict[str, Any], grammar: Any = None) -> Iterator[dict[str, Any]]:
        return self._llm.create_completion(
            str(body.get("prompt") or ""),
            max_tokens=int(body.get("max_tokens") or 256),
            temperature=float(body.get("temperature") or 0.0),
            grammar=grammar,
            stream=True,
        )

    async def stream(self, make: Any) -> AsyncIterator[dict[str, Any]]:
        """Items of a blocking generator, produced on a thread under the lock; a client that goes
        away stops the generation at its next token."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                with self._lock:
                    for item in make():
                        if stop.is_set():
                            break
                        loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as exc:  # re-raised on the loop
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = loop.run_in_executor(None, produce)
        try:
            while (item := await queue.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            await asyncio.shield(worker)


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content or "")


def build_app(engine: Engine, token: str, info: dict[str, Any]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def authorised(request: Request) -> bool:
        given = request.headers.get("authorization", "")
        return secrets.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def body_of(request: Request) -> dict[str, Any] | Response:
        if not authorised(request):
            return JSONResponse({"error": {"message": "missing or wrong token"}}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": {"message": "the body must be a JSON object"}}, status_code=400)
        return body

    def sse(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            async for event in events:
                yield b"data: " + json.dumps(event).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(lines(), media_type="text/event-stream")

    async def grammar_of(body: dict[str, Any]) -> Any:
        """The body's grammar, or the 400 that says why there is none; built off the loop (a large
        schema takes a while), and outside the generation lock: it only reads the vocabulary."""
        try:
            return await asyncio.to_thread(engine.grammar, body)
        except GrammarError as exc:
            return JSONResponse({"error": {"message": str(exc)}}, status_code=400)

    async def chat(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body.get("messages"), list):
            return JSONResponse({"error": {"message": "messages must be a list"}}, status_code=400)
        grammar = await grammar_of(body)
        if isinstance(grammar, Response):
            return grammar
        return sse(engine.stream(lambda: engine.chat(body, grammar)))

    async def complete(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        grammar = await grammar_of(body)
        if isinstance(grammar, Response):
            return grammar
        return sse(engine.stream(lambda: engine.complete(body, grammar)))

    async def tokenize(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        if isinstance(body.get("messages"), list):
            count = await asyncio.to_thread(engine.count_messages, body["messages"])
        else:
            count = await asyncio.to_thread(engine.count_text, str(body.get("text") or ""))
        return JSONResponse({"count": count})

    async def health(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"error": {"message": "missing or wrong token"}}, status_code=401)
        return JSONResponse({"status": "OK", **info})

    async def models(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"error": {"message": "missing or wrong token"}}, status_code=401)
        return JSONResponse({"object": "list", "data": [{"id": info["model"], "object": "model"}]})

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", complete, methods=["POST"]),
        Route("/v1/tokenize", tokenize, methods=["POST"]),
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
    ])


def _exit_with_parent() -> None:
    """The supervisor owns this process: when it is gone, so is the model."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _announce(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--variant", default="", help="llama.cpp CPU variant; empty for a build without variants")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    token = os.environ.get(TOKEN_ENV) or ""
    if not token:
        _announce(error=f"{TOKEN_ENV} is not set")
        sys.exit(2)
    _exit_with_parent()
    started = time.monotonic()
    try:
        if args.variant:
            load_variant(args.variant)
        engine = Engine(Path(args.model), args.n_ctx, args.threads)
    except Exception as exc:  # a bad file or a refused variant: say why, then stop
        _announce(error=f"could not load {args.model}: {exc}")
        sys.exit(2)
    if args.variant and os.environ.get(TRAP_ENV) == args.variant:
        import signal

        os.kill(os.getpid(), signal.SIGILL)
    engine.check()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # before "ready": a connection that comes at once must queue, not be refused
    port = listener.getsockname()[1]
    info = {"model": args.model_id, "variant": args.variant or "built-in", "n_ctx": engine.n_ctx,
            "pid": os.getpid(), "load_seconds": round(time.monotonic() - started, 2)}
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(build_app(engine, token, info), log_level="warning", access_log=False))
    _announce(ready=True, port=port, **info)
    server.run(sockets=[listener])


if __name__ == "__main__":
    main()
