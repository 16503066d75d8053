"""`inline::llama-cpp`: a small chat model run in this process by llama-cpp-python.

Default weights: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) from its pinned part packages, joined into
the data dir and verified by sha256. `config.model_path` points at any local GGUF instead, and
`config.weights: qwen2.5-coder-1.5b-instruct` picks the larger packaged model.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

from ...errors import BadRequest, Unavailable
from ..protocols import ChatChunk, ChatRequest
from .gguf_weights import CATALOG, DEFAULT_WEIGHTS, PackagedGGUF, materialise, verify_packaged
from .streaming import iterate_in_thread

log = logging.getLogger(__name__)
DEFAULT_CONTEXT = 8192


class LlamaCppModel:
    """One loaded GGUF. llama.cpp contexts are not thread-safe: one generation at a time."""

    def __init__(self, model_id: str, path: Path, n_ctx: int, threads: int):
        from llama_cpp import Llama

        self.model_id = model_id
        self.path = path
        self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_batch=512, verbose=False)
        self.context_window = self._llm.n_ctx()
        self._lock = threading.Lock()

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        text = "".join(f"<|im_start|>{m.get('role')}\n{_text(m.get('content'))}<|im_end|>\n" for m in messages)
        # Tool calls and definitions are counted roughly by their JSON length.
        extra = sum(len(str(m.get("tool_calls", ""))) // 3 for m in messages)
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) + extra

    def count_text(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False))

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        max_tokens = request.max_tokens or max(256, min(1024, self.context_window // 4))

        def generate() -> Iterator[dict[str, Any]]:
            return self._llm.create_chat_completion(
                messages=request.messages,
                tools=request.tools or None,
                tool_choice=request.tool_choice if request.tools else None,
                temperature=request.temperature,
                top_p=request.top_p if request.top_p is not None else 0.95,
                max_tokens=max_tokens,
                stop=request.stop,
                stream=True,
            )

        async for chunk in iterate_in_thread(generate, self._lock):
            choice = chunk["choices"][0]
            delta = choice.get("delta") or {}
            calls = delta.get("tool_calls") or None
            yield ChatChunk(
                text=delta.get("content") or "",
                tool_calls=[_openai_call(c) for c in calls] if calls else None,
                finish_reason=choice.get("finish_reason"),
            )

    async def complete(self, prompt: str, max_tokens: int | None, temperature: float) -> AsyncIterator[ChatChunk]:
        def generate() -> Iterator[dict[str, Any]]:
            return self._llm.create_completion(prompt, max_tokens=max_tokens or 256, temperature=temperature,
                                               stream=True)

        async for chunk in iterate_in_thread(generate, self._lock):
            choice = chunk["choices"][0]
            yield ChatChunk(text=choice.get("text") or "", finish_reason=choice.get("finish_reason"))


def _openai_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {"id": call.get("id") or "", "name": fn.get("name") or "", "arguments": fn.get("arguments") or "{}"}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content or "")


_loaded: dict[tuple[str, int], LlamaCppModel] = {}
_loaded_lock = threading.Lock()


class LlamaCppProvider:
    """Serves chat models from GGUF files; each file is loaded once per process, on first use."""

    def __init__(self, provider_id: str, provider_type: str, config: dict[str, Any], data_dir: Path):
        self.provider_id = provider_id
        self.config = config
        self._data_dir = data_dir
        self._n_ctx = int(config.get("n_ctx") or DEFAULT_CONTEXT)
        self._threads = int(config.get("n_threads") or os.cpu_count() or 2)

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

    def verify(self, provider_model_id: str) -> str:
        """That the model could load, without loading or joining it (`stackrag doctor`); raises StackError."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise Unavailable("llama-cpp-python is not installed: pip install llama-cpp-python==0.3.36")
        path = self._configured_path(provider_model_id)
        if path is not None:
            return f"{path} (config.model_path)"
        return verify_packaged(*self._packaged(provider_model_id))

    def chat_model(self, provider_model_id: str) -> LlamaCppModel:
        path = self._path_for(provider_model_id)
        key = (str(path), self._n_ctx)
        with _loaded_lock:
            if key not in _loaded:
                try:
                    _loaded[key] = LlamaCppModel(provider_model_id, path, self._n_ctx, self._threads)
                except ImportError as exc:
                    raise Unavailable("llama-cpp-python is not installed: pip install llama-cpp-python") from exc
                except ValueError as exc:
                    raise Unavailable(f"could not load {path}: {exc}") from exc
            return _loaded[key]

    def health(self) -> dict[str, str]:
        return {"status": "OK", "message": f"local GGUF models, context {self._n_ctx} tokens"}
