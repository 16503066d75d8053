"""The in-process search side of Milvus Lite collections: exact cosine search, BM25 with
collection-wide statistics, deletes that match the Milvus deletes, the same results after its
postings are re-frozen, and snapshots."""

from __future__ import annotations

import math

import numpy as np

from stackrag.providers.vector_io import local_index
from stackrag.providers.vector_io.local_index import LocalIndex, RowMeta, tokenize

DIM = 4


def meta(i: int, doc: str, ingest: str = "i1") -> RowMeta:
    return RowMeta(f"r{i}", f"c{i}", doc, ingest)


def axis(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    return v


def rows(items):
    """(meta, text) pairs with a vector each (unit vector on axis i)."""
    return [(m, text, axis(i)) for i, (m, text) in enumerate(items)]


def new_index() -> LocalIndex:
    return LocalIndex(DIM)


def test_tokenize_drops_stop_words_and_keeps_identifiers():
    assert tokenize("What is the LoRA rank of lora_finetune_single_device?") == [
        "lora", "rank", "lora_finetune_single_device"]
    assert tokenize("向量数据库") == ["向", "量", "数", "据", "库"]


def test_idf_is_collection_wide():
    index = new_index()
    index.add(rows((meta(i, f"d{i}"), "common words here" + (" hedgehog" if i == 0 else "")) for i in range(20)))
    assert index.idf("hedgehog") == math.log(1 + (20 - 1 + 0.5) / 1.5)
    assert index.idf("common") < index.idf("hedgehog") < index.idf("absent")
    assert [h.row_id for h in index.search("hedgehog", 5)] == ["r0"]


def test_rare_term_outranks_long_unrelated_text():
    index = new_index()
    index.add(rows([(meta(0, "notes"), "Hedgehogs eat insects."),
               (meta(1, "long"), " ".join(["eat insects garden animals"] * 50))]))
    assert index.search("what do hedgehogs eat", 2)[0].row_id == "r0"


def test_delete_follows_the_milvus_selection_and_refreezing_keeps_results(monkeypatch):
    monkeypatch.setattr(local_index, "MIN_PENDING_ROWS", 3)
    index = new_index()
    index.add(rows((meta(i, f"d{i % 3}", "old"), f"row {i} alpha" + (" beta" if i % 2 else "")) for i in range(9)))
    index.add(rows((meta(100 + i, "d0", "new"), f"replacement {i} alpha gamma") for i in range(2)))
    before = [h.row_id for h in index.search("beta", 10)]
    # A re-insert of d0 keeps the new ingest's rows and removes the old ones.
    assert index.delete("document_id", ["d0"], keep_ingest="new") == 3
    assert len(index) == 8
    after = [h.row_id for h in index.search("beta", 10)]
    assert set(after) == set(before) - {"r3"}
    assert {h.row_id for h in index.search("gamma", 10)} == {"r100", "r101"}
    assert {h.row_id for h in index.search("alpha", 20, document_ids=["d1"])} == {"r1", "r4", "r7"}
    index.delete("ingest_id", ["new"])
    assert index.search("gamma", 10) == []


def test_coverage_weighs_rare_terms():
    index = new_index()
    index.add(rows((meta(i, "d"), f"torchtune finetuning recipe {i} lora") for i in range(10)))
    assert index.coverage("lora finetuning recipe", ["use lora in the finetuning recipe"]) == 1.0
    low = index.coverage("finetuning on sagemaker", ["the finetuning recipe"])
    assert low is not None and low < 0.3
    assert index.coverage("what is it", ["anything"]) is None


def test_a_snapshot_reloads_the_same_index(tmp_path):
    index = new_index()
    index.add(rows((meta(i, f"d{i % 2}"), f"alpha {i} beta" + (" gamma" if i == 3 else "")) for i in range(6)))
    index.delete("document_id", ["d1"])
    path = tmp_path / "kw.npz"
    index.save(path)
    loaded = LocalIndex.load(path)
    assert loaded is not None and len(loaded) == len(index) == 3
    assert [(h.row_id, round(h.score, 5)) for h in loaded.search("alpha beta", 10)] == \
        [(h.row_id, round(h.score, 5)) for h in index.search("alpha beta", 10)]
    assert loaded.search("gamma", 5) == []
    loaded.add(rows([(meta(9, "d9"), "gamma again")]))
    assert [h.row_id for h in loaded.search("gamma", 5)] == ["r9"]
    path.write_bytes(b"not a snapshot")
    assert LocalIndex.load(path) is None


def test_dense_search_is_exact_cosine_over_live_rows(monkeypatch):
    monkeypatch.setattr(local_index, "MIN_PENDING_ROWS", 2)
    index = new_index()
    vectors = np.random.default_rng(0).standard_normal((50, DIM)).astype(np.float32)
    index.add((meta(i, f"d{i % 5}"), f"text {i}", vectors[i] * (i + 1)) for i in range(50))  # norms differ
    index.delete("document_id", ["d0"])
    query = vectors[7]
    expected = sorted((i for i in range(50) if i % 5), key=lambda i: -float(
        vectors[i] @ query / np.linalg.norm(vectors[i]) / np.linalg.norm(query)))[:5]
    hits = index.search_dense(query * 3, 5)
    assert [h.row_id for h in hits] == [f"r{i}" for i in expected]
    assert hits[0].row_id == "r7" and abs(hits[0].score - 1.0) < 1e-5
    assert {h.row_id for h in index.search_dense(query, 50, document_ids=["d2"])} == {f"r{i}" for i in range(2, 50, 5)}
    assert index.cosine({"r7", "r5", "missing"}, query).keys() == {"r7"}  # r5 is in d0, deleted
