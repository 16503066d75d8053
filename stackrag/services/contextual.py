"""Contextual chunking (Llama Stack's `chunking_strategy: {type: contextual}`): a chat model writes,
for each chunk, a short description that situates it in its whole document; the chunk is stored
and embedded as that description, a blank line, then its own text. A chunk found by search then
carries what it is about even when its own words do not say it."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import BadRequest
from ..wire.openai import ContextualChunking
from .inference import Sampling, answer_text
from .models import ModelService

# Enough for the "short succinct description" the prompt asks for; a model that rambles is cut.
CONTEXT_TOKENS = 100
DEFAULT_CONCURRENCY = 2
DEFAULT_TIMEOUT_SECONDS = 120.0


def check_model(models: ModelService, config: ContextualChunking) -> None:
    """At attach time, so that the caller gets the 400 and not a failed file later."""
    if not config.model_id:
        raise BadRequest("contextual chunking needs chunking_strategy.contextual.model_id: the chat model (llm) "
                         "that writes each chunk's context; GET /v1/models lists them")
    models.chat_model(config.model_id)


class Contextualizer:
    """Given a document's text and its chunks, the context line of each chunk ("" when the model
    wrote nothing; the chunk is then stored as it is)."""

    def __init__(self, models: ModelService, config: dict[str, Any]):
        self._models = models
        self._config = ContextualChunking.model_validate(config)

    async def __call__(self, document: str, chunks: list[str]) -> list[str]:
        config = self._config
        model = self._models.chat_model(config.model_id or "")
        semaphore = asyncio.Semaphore(config.max_concurrency or DEFAULT_CONCURRENCY)
        timeout = float(config.timeout_seconds or DEFAULT_TIMEOUT_SECONDS)

        async def one(chunk: str) -> str:
            # Plain replacement, not str.format: documents are full of braces.
            prompt = config.context_prompt.replace("{{WHOLE_DOCUMENT}}", document).replace("{{CHUNK_CONTENT}}", chunk)
            messages = [{"role": "user", "content": prompt}]
            async with semaphore:
                try:
                    return await asyncio.wait_for(answer_text(model, messages, Sampling(max_tokens=CONTEXT_TOKENS)),
                                                  timeout)
                except asyncio.TimeoutError:
                    raise BadRequest(f"model {config.model_id!r} took over {timeout:g} s to write a chunk's context "
                                     "(chunking_strategy.contextual.timeout_seconds)") from None
                except BadRequest as exc:  # the document does not fit in the model's context
                    raise BadRequest(f"contextual chunking with model {config.model_id!r}: {exc.message} "
                                     "(the whole document goes into each prompt: use static chunking, "
                                     "or a model with a longer context)") from None

        return list(await asyncio.gather(*(one(c) for c in chunks)))

