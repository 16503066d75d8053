"""Hybrid fusion done by stackrag, with the formulas of Milvus's rankers (fusion.py says why)."""

from __future__ import annotations

import math

from stackrag.providers.vector_io.fusion import fuse


def test_rrf_adds_reciprocal_ranks_from_one():
    fused = fuse([("a", 0.9), ("b", 0.8)], [("b", 7.0), ("c", 3.0)], {"type": "rrf", "impact_factor": 60}, 10)
    assert [r for r, _ in fused] == ["b", "a", "c"]
    assert dict(fused)["b"] == 1 / 62 + 1 / 61 and dict(fused)["c"] == 1 / 62


def test_weighted_uses_milvus_normalisations_and_ranks_bm25_higher_is_better():
    dense, keyword = [("a", 0.5)], [("b", 9.0), ("c", 1.0)]
    only_keyword = fuse(dense, keyword, {"type": "weighted", "alpha": 0.0}, 10)
    assert [r for r, s in only_keyword if s > 0] == ["b", "c"]  # the engine's own ranker gave c first
    assert dict(only_keyword)["b"] == 2 * math.atan(9.0) / math.pi
    assert dict(fuse(dense, keyword, {"type": "weighted", "alpha": 1.0}, 10))["a"] == 0.75
    assert len(fuse(dense, keyword, None, 2)) == 2
