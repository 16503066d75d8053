"""Search queries written by a chat model: knowledge_search's `query_generator_config: {type: llm}`
(Llama Stack 0.2) and vector-store search's `rewrite_query` (0.7, with a model named in the run
config, as the reference requires).

Measured on the four dev sets (docs/retrieval.md): a query rewritten by the local 0.5B model
ranks worse than the user's own words, so neither is on by default; they are for a capable
(usually remote) model.
"""

from __future__ import annotations

from typing import Any

from ..config import QueryRewriteSettings
from ..content.templates import render_generator_template
from ..content.text import content_as_text
from ..errors import BadRequest
from .inference import Sampling, answer_text
from .models import ModelService

GENERATED_QUERY_TOKENS = 100


class QueryWriter:
    def __init__(self, models: ModelService, rewrite: QueryRewriteSettings):
        self._models = models
        self._rewrite = rewrite

    def check_configured(self) -> None:
        """At start-up: a rewrite model the run config names must be a declared chat model."""
        model = self._rewrite.model
        if model and self._models.get(model).model_type != "llm":
            raise BadRequest(f"retrieval.rewrite_query.model {model!r} is not a chat model (llm)")

    def check_model(self, model_id: str) -> None:
        """When the request arrives: an unknown or non-chat model is the caller's 4xx, not a failed search."""
        self._models.chat_model(model_id)

    async def generated(self, model_id: str, template: str, content: Any) -> str:
        """knowledge_search's query from the model, given the tool's content (a message or a list)."""
        items = content if isinstance(content, list) else [content]
        messages = [content_as_text(item, "content") for item in items]
        prompt = render_generator_template(template, messages)
        query = await answer_text(self._models.chat_model(model_id), [{"role": "user", "content": prompt}],
                                  Sampling(max_tokens=GENERATED_QUERY_TOKENS))
        if not query:
            raise BadRequest(f"model {model_id!r} wrote an empty search query from query_generator_config.template")
        return query

    async def rewritten(self, query: str) -> str:
        """vector-store search's rewrite_query, with the run config's retrieval.rewrite_query."""
        settings = self._rewrite
        if not settings.model:
            # The reference's words first: its conformance test looks for them.
            raise BadRequest("Query rewriting is not available: no model to rewrite with is configured; set "
                             "retrieval.rewrite_query.model in the run config (a chat model from GET /v1/models), "
                             "or send rewrite_query false")
        # Plain replacement, not str.format: a query may hold braces.
        prompt = settings.prompt.replace("{query}", query)
        rewritten = await answer_text(self._models.chat_model(settings.model), [{"role": "user", "content": prompt}],
                                      Sampling(temperature=settings.temperature, max_tokens=settings.max_tokens))
        return rewritten or query
