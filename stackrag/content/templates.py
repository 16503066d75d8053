"""Templates a caller sends. knowledge_search's chunk_template: `{index}`, `{chunk.content}`,
`{chunk.metadata}` and `{metadata}` in literal text, nothing else; and the LLM query generator's
template (below).

It is rendered by substitution, not str.format: a format spec (`{index:>200000000}`), a conversion
(`{metadata!r}`) or an attribute walk (`{chunk.__class__}`) is refused when the request arrives.
"""

from __future__ import annotations

import re
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


# The generator's template is Llama Stack's Jinja template reduced to what a query prompt needs:
# `{{ messages }}` (every message, one per line) and `{{ messages[i] }}`. Jinja itself is not run
# on a caller's text (a loop in it can take any amount of time).
_FIELD = re.compile(r"\{\{\s*messages\s*(?:\[\s*(-?\d{1,3})\s*\])?\s*\}\}")


def check_generator_template(template: str) -> str:
    rest = _FIELD.sub("", template)
    if "{{" in rest or "{%" in rest or "}}" in rest:
        raise ValueError("query_generator_config.template may only use {{ messages }} (every message, one per line) "
                         "and {{ messages[i] }} (one message); remove other Jinja expressions and tags")
    if not _FIELD.search(template):
        raise ValueError("query_generator_config.template must contain {{ messages }} or {{ messages[i] }}")
    return template


def render_generator_template(template: str, messages: list[str]) -> str:
    def field(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return "\n".join(messages)
        i = int(match.group(1))
        return messages[i] if -len(messages) <= i < len(messages) else ""

    return _FIELD.sub(field, template)
