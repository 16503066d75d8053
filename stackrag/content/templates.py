"""knowledge_search's chunk_template: `{index}`, `{chunk.content}`, `{chunk.metadata}` and `{metadata}`
in literal text, nothing else.

It is rendered by substitution, not str.format: a format spec (`{index:>200000000}`), a conversion
(`{metadata!r}`) or an attribute walk (`{chunk.__class__}`) is refused when the request arrives.
"""

from __future__ import annotations

import string
from typing import Any

FIELDS = ("index", "chunk.content", "chunk.metadata", "metadata")
DEFAULT_CHUNK_TEMPLATE = "Result {index}\nContent: {chunk.content}\nMetadata: {metadata}\n"


def _parts(template: str) -> list[tuple[str, str | None]]:
    """(literal text, field or None) pairs; ValueError names what is wrong."""
    parts = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if name is not None:
            if name not in FIELDS:
                raise ValueError(f"chunk_template may only use {', '.join('{' + f + '}' for f in FIELDS)}; "
                                 f"remove {name}")
            if spec or conversion:
                raise ValueError(f"chunk_template fields take no format spec or conversion: write {{{name}}}")
        parts.append((literal, name))
    return parts


def check_chunk_template(template: str) -> str:
    try:
        names = {name for _, name in _parts(template)}
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith("chunk_template") else
                         f"chunk_template is not a valid template: {message}") from None
    if "index" not in names or "chunk.content" not in names:
        raise ValueError("chunk_template must contain {index} and {chunk.content}")
    return template


def render(template: str, index: int, content: Any, metadata: dict[str, Any], shown: dict[str, Any]) -> str:
    """The template with its fields filled in (`metadata` is what the reader is shown)."""
    values = {"index": str(index), "chunk.content": str(content), "chunk.metadata": str(metadata),
              "metadata": str(shown)}
    return "".join(literal + (values[name] if name else "") for literal, name in _parts(template))
