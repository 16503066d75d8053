"""Fusing a dense and a keyword ranking into one, the way Milvus's rankers do it server-side, so
hybrid scores mean the same on Milvus Lite (fused here) and on a Milvus server (fused there)."""

from __future__ import annotations

import math
from typing import Any


def fuse(dense: list[tuple[str, float]], keyword: list[tuple[str, float]], ranker: dict[str, Any] | None,
         limit: int) -> list[tuple[str, float]]:
    """Both lists hold (row id, score) best first: cosine for dense, BM25 for keyword."""
    spec = ranker or {}
    scores: dict[str, float] = {}
    if spec.get("type", "rrf") == "weighted":
        alpha = float(spec.get("alpha", 0.5))
        # Milvus's normalisations: cosine to [0, 1] linearly, unbounded BM25 through arctan.
        for row_id, score in dense:
            scores[row_id] = scores.get(row_id, 0.0) + alpha * (1.0 + score) / 2.0
        for row_id, score in keyword:
            scores[row_id] = scores.get(row_id, 0.0) + (1.0 - alpha) * (0.5 + math.atan(score) / math.pi)
    else:
        k = int(spec.get("impact_factor", 60))
        for ranking in (dense, keyword):
            for rank, (row_id, _) in enumerate(ranking):
                scores[row_id] = scores.get(row_id, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)[:limit]
