"""The provider table: which `provider_type` of a run config is served by which class.

Adding a provider is one module plus one row here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .protocols import Provider, ProviderFactory


@dataclass(frozen=True)
class ProviderSpec:
    api: str
    provider_type: str
    # "module:Class", imported only when a config uses it; None: served by the services themselves.
    target: str | None


PROVIDERS: dict[str, ProviderSpec] = {
    spec.provider_type: spec
    for spec in [
        ProviderSpec("inference", "inline::sentence-transformers",
                     "stackrag.providers.inference.sentence_transformers:SentenceTransformersProvider"),
        ProviderSpec("inference", "inline::llama-cpp", "stackrag.providers.inference.llama_cpp:LlamaCppProvider"),
        *(
            ProviderSpec("inference", t, "stackrag.providers.inference.openai_compat:OpenAICompatProvider")
            for t in ("remote::openai", "remote::together", "remote::vllm", "remote::ollama")
        ),
        ProviderSpec("vector_io", "inline::milvus", "stackrag.providers.vector_io.milvus:MilvusIndex"),
        ProviderSpec("vector_io", "remote::milvus", "stackrag.providers.vector_io.milvus:MilvusIndex"),
        ProviderSpec("tool_runtime", "inline::rag-runtime", None),
    ]
}


def lookup(api: str, provider_type: str) -> ProviderSpec | None:
    spec = PROVIDERS.get(provider_type)
    return spec if spec is not None and spec.api == api else None


def factory(spec: ProviderSpec) -> ProviderFactory:
    if spec.target is None:
        raise ValueError(f"{spec.provider_type} is served by the services, not a provider class")
    module_name, _, class_name = spec.target.partition(":")
    return cast(ProviderFactory, getattr(importlib.import_module(module_name), class_name))


def create(spec: ProviderSpec, provider_id: str, config: dict[str, Any], data_dir: Path) -> Provider:
    return factory(spec)(provider_id, spec.provider_type, dict(config), data_dir)
