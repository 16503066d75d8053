"""OpenAI cursor pagination (`after`, `before`, `limit`, `order`) over records with ids."""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest


def page(items: list[dict[str, Any]], limit: int | None, order: str | None, after: str | None,
         before: str | None, key: str = "created_at") -> dict[str, Any]:
    """OpenAI cursor pagination over a list of records with ids."""
    if order not in (None, "asc", "desc"):
        raise BadRequest("order must be 'asc' or 'desc'")
    limit = 20 if limit is None else limit
    if not 1 <= limit <= 10_000:
        raise BadRequest("limit must be between 1 and 10000")
    ordered = sorted(items, key=lambda r: (r.get(key) or 0, r["id"]), reverse=(order or "desc") == "desc")
    ids = [r["id"] for r in ordered]
    if after is not None:
        if after not in ids:
            raise BadRequest(f"after: no item {after!r}")
        ordered = ordered[ids.index(after) + 1:]
    if before is not None:
        ids = [r["id"] for r in ordered]
        if before not in ids:
            raise BadRequest(f"before: no item {before!r}")
        ordered = ordered[: ids.index(before)]
    data = ordered[:limit]
    return {"object": "list", "data": data, "has_more": len(ordered) > limit,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
