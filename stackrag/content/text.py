"""Llama Stack "interleaved content" (a string, a content item, or a list of them) as plain text and
as plain JSON; the items may be typed (wire models) or as stored (dicts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..errors import BadRequest


def plain(content: Any) -> Any:
    """Typed content (wire models) as the JSON it came as; plain content as it is."""
    if isinstance(content, BaseModel):
        return content.model_dump(exclude_none=True)
    if isinstance(content, list):
        return [plain(item) for item in content]
    return content


def content_as_text(content: Any, field: str, sep: str = " ") -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, BaseModel):
        content = plain(content)
    if isinstance(content, list):
        return sep.join(content_as_text(item, f"{field}[{i}]", sep) for i, item in enumerate(content))
    if isinstance(content, dict):
        kind = content.get("type")
        if kind == "text" and isinstance(content.get("text"), str):
            return content["text"]
        if kind == "image":
            raise BadRequest(f"{field}: image content cannot be searched or embedded as text")
        raise BadRequest(f"{field}: expected a string or {{'type': 'text', 'text': ...}}, got type {kind!r}")
    raise BadRequest(f"{field}: expected a string or a list of content items")
