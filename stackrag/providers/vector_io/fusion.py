"""Hybrid search: a dense and a BM25 ranking, each searched by Milvus, fused here with the formulas
of Milvus's own rankers (RRF; weighted with Milvus's normalisations: cosine (1+c)/2, BM25
2·atan(s)/π).

Not with hybrid_search, for two reasons measured on the embedded engine (docs/milvus-servers.md):
its hybrid_search took 11 ms at 100k rows where its two searches take 5 ms together, and its
WeightedRanker normalises BM25 as a distance (1 - 2·atan(s)/π, as Milvus before 2.5 did for any
metric it did not know), so it ranks keyword matches backwards. Fused here, hybrid scores mean the
same on the embedded engine and on every Milvus server.
"""

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
        for row_id, score in dense:
            scores[row_id] = scores.get(row_id, 0.0) + alpha * (1.0 + score) / 2.0
        for row_id, score in keyword:
            scores[row_id] = scores.get(row_id, 0.0) + (1.0 - alpha) * 2.0 * math.atan(score) / math.pi
    else:
        k = int(spec.get("impact_factor", 60))
        for ranking in (dense, keyword):
            for rank, (row_id, _) in enumerate(ranking, start=1):
                scores[row_id] = scores.get(row_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)[:limit]
