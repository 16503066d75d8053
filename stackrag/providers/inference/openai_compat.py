"""`remote::openai`, `remote::together`, `remote::vllm`, `remote::ollama`: one adapter for any
OpenAI-compatible chat API (also a llama.cpp server). The key comes from the request's
X-LlamaStack-Provider-Data, else the config, else the provider's environment variable.

The local model (`inline::llama-cpp`) is reached through this same adapter: its process serves the
same API on loopback (llama_worker.py), so there is one inference path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx

from ...errors import BadRequest, Unavailable
from ..protocols import ChatChunk, ChatRequest, StructuredOutput


@dataclass(frozen=True)
class Flavour:
    base_url: str | None
    env_key: str | None
    provider_data_key: str | None


FLAVOURS = {
    "remote::openai": Flavour("https://api.openai.com/v1", "OPENAI_API_KEY", "openai_api_key"),
    "remote::together": Flavour("https://api.together.xyz/v1", "TOGETHER_API_KEY", "together_api_key"),
    "remote::vllm": Flavour(None, "VLLM_API_TOKEN", "vllm_api_token"),
    "remote::ollama": Flavour("http://localhost:11434/v1", None, None),
}
DEFAULT_CONTEXT = 8192
# Seconds without a byte from the provider before a request fails; a slow first token on a loaded
# server can take long, but a stalled stream must end in an error event, not hold the client forever.
DEFAULT_TIMEOUT = 120.0

# (base URL, key) of the API to call now, given the request's own key; the local model's address
# changes when its process restarts, and a request may wait for it.
Locate = Callable[[str | None], Awaitable[tuple[str, str | None]]]


class OpenAIEndpoint:
    """One OpenAI-compatible API and one long-lived HTTP client for it (connections are reused)."""

    def __init__(self, provider_id: str, locate: Locate, timeout: float):
        self.provider_id = provider_id
        self._locate = locate
        self.timeout = httpx.Timeout(timeout, connect=10.0)
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, trust_env=False,
                                             limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        return self._client

    def _headers(self, key: str | None, accept: str) -> dict[str, str]:
        headers = {"accept": accept}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        base, key = await self._locate(None)
        where = f"inference provider {self.provider_id} at {base}"
        try:
            response = await self.client().post(base + path, json=body, headers=self._headers(key, "application/json"))
        except httpx.HTTPError as exc:
            raise Unavailable(f"{where} failed: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise Unavailable(f"inference provider {self.provider_id} answered {response.status_code}: "
                              f"{response.text[:500]}")
        try:
            value = response.json()
        except ValueError:
            raise Unavailable(f"{where} sent malformed JSON") from None
        return value if isinstance(value, dict) else {}

    async def post_stream(self, path: str, body: dict[str, Any], request_key: str | None) -> AsyncIterator[dict]:
        base, key = await self._locate(request_key)
        where = f"inference provider {self.provider_id} at {base}"
        started = finished = False
        try:
            async with self.client().stream("POST", base + path, json=body,
                                            headers=self._headers(key, "text/event-stream")) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:500]
                    message = f"inference provider {self.provider_id} answered {response.status_code}: {detail}"
                    # The provider refused what the caller asked for (a schema it cannot follow, say):
                    # the caller's to fix, not an outage.
                    raise BadRequest(message) if response.status_code in (400, 422) else Unavailable(message)
                started = True
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        event = json.loads(data)
                    except ValueError:
                        raise Unavailable(f"{where} sent a malformed stream event: {data[:200]!r}") from None
                    finished = finished or any(c.get("finish_reason") for c in event.get("choices") or [])
                    yield event
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unavailable(f"{where} is unreachable: {type(exc).__name__}") from exc
        except httpx.TimeoutException as exc:
            raise Unavailable(f"{where} sent nothing for {self.timeout.read:g} s ({type(exc).__name__}); "
                              "raise its config.timeout if the model is just slow") from exc
        except httpx.HTTPError as exc:
            state = "broke off the answer mid-stream" if started else "failed before answering"
            raise Unavailable(f"{where} {state}: {type(exc).__name__}") from exc
        if not finished:
            # A clean close without [DONE] or a finish_reason: the answer is cut short, not complete.
            raise Unavailable(f"{where} ended the stream before the answer was complete")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class OpenAIChatModel:
    """A chat model behind an OpenAI-compatible API."""

    def __init__(self, endpoint: OpenAIEndpoint, provider_model_id: str, context_window: int):
        self.endpoint = endpoint
        self.model_id = provider_model_id
        self.context_window = context_window

    async def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        # No tokenizer for a remote model: ~4 characters a token is the usual, safe-side estimate.
        return sum(len(json.dumps(m, ensure_ascii=False)) for m in messages) // 3

    async def count_text(self, text: str) -> int:
        return len(text) // 3

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": request.messages,
            "stream": True,
            "temperature": request.temperature,
        }
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = request.stop
        if request.tools:
            body["tools"] = request.tools
            body["tool_choice"] = request.tool_choice or "auto"
        if request.structured:
            body["response_format"] = response_format(request.structured)
        pending: dict[int, dict[str, Any]] = {}
        async for event in self.endpoint.post_stream("/chat/completions", body, request.api_key):
            if not event.get("choices"):
                continue
            choice = event["choices"][0]
            delta = choice.get("delta") or {}
            for call in delta.get("tool_calls") or []:
                slot = pending.setdefault(call.get("index", 0), {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            finish = choice.get("finish_reason")
            calls = [pending[i] for i in sorted(pending)] if finish and pending else None
            if delta.get("content") or finish or calls:
                yield ChatChunk(text=delta.get("content") or "", tool_calls=calls, finish_reason=finish)

    async def complete(self, prompt: str, max_tokens: int | None, temperature: float,
                       structured: StructuredOutput | None = None) -> AsyncIterator[ChatChunk]:
        body: dict[str, Any] = {"model": self.model_id, "prompt": prompt, "stream": True, "temperature": temperature,
                                "max_tokens": max_tokens or 256}
        if structured:
            # Not in OpenAI's /completions (which refuses it, a 400); vLLM and the local model
            # process honour it. Sent all the same: a refusal the caller reads beats a format dropped.
            body["response_format"] = response_format(structured)
        async for event in self.endpoint.post_stream("/completions", body, None):
            if event.get("choices"):
                choice = event["choices"][0]
                yield ChatChunk(text=choice.get("text") or "", finish_reason=choice.get("finish_reason"))


def response_format(structured: StructuredOutput) -> dict[str, Any]:
    """OpenAI's response_format for it."""
    if structured.schema is None:
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": structured.name, "schema": structured.schema}
    if structured.description is not None:
        spec["description"] = structured.description
    if structured.strict is not None:
        spec["strict"] = structured.strict
    return {"type": "json_schema", "json_schema": spec}


class OpenAICompatProvider:
    serves = frozenset({"llm"})

    def __init__(self, provider_id: str, provider_type: str, config: dict[str, Any], data_dir: Path):
        self.provider_id = provider_id
        self.flavour = FLAVOURS[provider_type]
        url = config.get("base_url") or config.get("url") or self.flavour.base_url
        if not url:
            raise BadRequest(f"inference provider {provider_id} ({provider_type}) needs config.url")
        url = str(url).rstrip("/")
        if provider_type == "remote::ollama" and not url.endswith("/v1"):
            url += "/v1"
        self.base_url = url
        self._config_key = config.get("api_key") or config.get("api_token")
        self.context_window = int(config.get("context_window") or DEFAULT_CONTEXT)
        self.endpoint = OpenAIEndpoint(provider_id, self._locate, float(config.get("timeout") or DEFAULT_TIMEOUT))

    async def _locate(self, request_key: str | None) -> tuple[str, str | None]:
        return self.base_url, self.api_key(request_key)

    def chat_model(self, provider_model_id: str) -> OpenAIChatModel:
        return OpenAIChatModel(self.endpoint, provider_model_id, self.context_window)

    def api_key(self, request_key: str | None) -> str | None:
        if request_key:
            return request_key
        if self._config_key:
            return str(self._config_key)
        return os.environ.get(self.flavour.env_key) if self.flavour.env_key else None

    def key_from_provider_data(self, provider_data: dict[str, Any]) -> str | None:
        key = self.flavour.provider_data_key
        return provider_data.get(key) if key else None

    def embedder(self, provider_model_id: str) -> Any:
        raise BadRequest(f"provider {self.provider_id} serves chat models only (embeddings run locally)")

    def verify(self, provider_model_id: str) -> str | None:
        return None  # a remote API: nothing to check without calling it

    def start(self, provider_model_id: str) -> None:
        pass

    def health(self) -> dict[str, str]:
        return {"status": "OK", "message": f"OpenAI-compatible API at {self.base_url}"}

    def close(self) -> None:
        pass  # the HTTP client goes with the event loop that made it
