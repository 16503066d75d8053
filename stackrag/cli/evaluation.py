"""`stackrag eval`: retrieval quality as numbers, measured through a running server's public API.

A corpus is ingested into a fresh vector DB (document_id = the file's path under the corpus dir),
every question is asked with vector-io query, and the ranked chunks' documents are scored against
the question's relevant documents: recall@k (any relevant document among the top-k chunks'
documents), MRR@10 and nDCG@10 (binary relevance, each document counted at its first chunk), per
question kind, plus query latency. Questions without relevant documents (unanswerable) are not
scored; their best score is reported, the evidence for a "nothing matches" threshold.
"""

from __future__ import annotations

import base64
import json
import math
import mimetypes
import re
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

CORPUS_SUFFIXES = {".rst": "text/x-rst", ".md": "text/markdown", ".txt": "text/plain", ".html": "text/html",
                   ".htm": "text/html", ".pdf": "application/pdf"}
DOCS_PER_REQUEST = 8
DEPTH = 10


@dataclass
class Question:
    id: str
    question: str
    relevant: list[str]
    kind: str = "all"
    answer: str = ""


@dataclass
class Scored:
    question: Question
    ranked_documents: list[str]
    top_score: float
    latency_ms: float
    metrics: dict[str, float] = field(default_factory=dict)


def load_questions(path: Path) -> list[Question]:
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            questions.append(Question(str(row["id"]), row["question"], list(row.get("relevant") or []),
                                      row.get("kind") or "all", row.get("answer") or ""))
        except KeyError as exc:
            raise ValueError(f"{path}:{number}: missing field {exc}") from exc
    return questions


def recall_at(ranked: list[str], relevant: set[str], k: int) -> float:
    return 1.0 if relevant & set(ranked[:k]) else 0.0


def reciprocal_rank(ranked: list[str], relevant: set[str], depth: int = DEPTH) -> float:
    for rank, doc in enumerate(ranked[:depth], start=1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def ndcg(ranked: list[str], relevant: set[str], depth: int = DEPTH) -> float:
    gains = sum(1.0 / math.log2(rank + 1) for rank, doc in enumerate(ranked[:depth], start=1) if doc in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), depth) + 1))
    return gains / ideal if ideal else 0.0


def unique_in_order(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def corpus_documents(corpus: Path) -> list[dict[str, Any]]:
    documents = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES):
        mime = CORPUS_SUFFIXES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "text/plain"
        data = base64.b64encode(path.read_bytes()).decode()
        documents.append({"document_id": path.relative_to(corpus).as_posix(), "mime_type": mime,
                          "content": f"data:{mime};base64,{data}", "metadata": {}})
    return documents


def ingest(http: httpx.Client, vector_db_id: str, corpus: Path, chunk_size: int,
           progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    http.post("/v1/vector-dbs", json={"vector_db_id": vector_db_id, "embedding_model": "all-MiniLM-L6-v2"}
              ).raise_for_status()
    documents = corpus_documents(corpus)
    if not documents:
        raise ValueError(f"no documents ({', '.join(sorted(CORPUS_SUFFIXES))}) under {corpus}")
    chunks = 0
    started = time.perf_counter()
    for start in range(0, len(documents), DOCS_PER_REQUEST):
        batch = documents[start : start + DOCS_PER_REQUEST]
        r = http.post("/v1/tool-runtime/rag-tool/insert",
                      json={"vector_db_id": vector_db_id, "documents": batch, "chunk_size_in_tokens": chunk_size})
        r.raise_for_status()
        chunks += int(r.headers.get("x-stackrag-chunks", "0"))
        if progress:
            progress(min(start + DOCS_PER_REQUEST, len(documents)), len(documents))
    return {"documents": len(documents), "chunks": chunks, "seconds": round(time.perf_counter() - started, 2)}


def ask(http: httpx.Client, vector_db_id: str, question: Question, mode: str | dict[str, Any]) -> Scored:
    """One vector-io query; `mode` is a mode name or the search params (mode, ranker)."""
    params = {"mode": mode} if isinstance(mode, str) else dict(mode)
    started = time.perf_counter()
    r = http.post("/v1/vector-io/query", json={
        "vector_db_id": vector_db_id, "query": question.question,
        "params": {"max_chunks": DEPTH, "score_threshold": -1.0, **params},
    })
    r.raise_for_status()
    latency = (time.perf_counter() - started) * 1000
    body = r.json()
    ranked = unique_in_order([c["metadata"].get("document_id", "") for c in body["chunks"]])
    return Scored(question, ranked, max(body["scores"], default=0.0), latency)


def score(result: Scored, ks: tuple[int, ...]) -> None:
    relevant = set(result.question.relevant)
    chunk_docs = result.ranked_documents
    result.metrics = {f"recall@{k}": recall_at(chunk_docs, relevant, k) for k in ks}
    result.metrics["mrr@10"] = reciprocal_rank(chunk_docs, relevant)
    result.metrics["ndcg@10"] = ndcg(chunk_docs, relevant)


def summarise(results: list[Scored]) -> dict[str, Any]:
    if not results:
        return {"n": 0}
    names = list(results[0].metrics)
    out: dict[str, Any] = {"n": len(results)}
    for name in names:
        out[name] = round(statistics.fmean(r.metrics[name] for r in results), 4)
    return out


def run_eval(url: str, questions_path: Path, corpus: Path, mode: str = "vector", chunk_size: int = 512,
             ks: tuple[int, ...] = (1, 3, 5, 10), vector_db_id: str | None = None, keep: bool = False,
             progress: Callable[[int, int], None] | None = None,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    questions = load_questions(questions_path)
    vector_db_id = vector_db_id or f"eval-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=url, timeout=httpx.Timeout(900.0, connect=10.0), headers=headers) as http:
        ingestion = ingest(http, vector_db_id, corpus, chunk_size, progress)
        try:
            results = [ask(http, vector_db_id, q, mode) for q in questions]
        finally:
            if not keep:
                http.delete(f"/v1/vector-dbs/{vector_db_id}")
    answerable = [r for r in results if r.question.relevant]
    for r in answerable:
        score(r, ks)
    kinds = sorted({r.question.kind for r in answerable})
    latencies = [r.latency_ms for r in results]
    unanswerable = [r for r in results if not r.question.relevant]
    return {
        "mode": mode, "chunk_size_in_tokens": chunk_size, "ingestion": ingestion,
        "overall": summarise(answerable),
        "by_kind": {kind: summarise([r for r in answerable if r.question.kind == kind]) for kind in kinds},
        "latency_ms": {"p50": round(statistics.median(latencies), 1),
                       "p99": round(sorted(latencies)[max(0, math.ceil(0.99 * len(latencies)) - 1)], 1)},
        "top_score": {
            "answerable_median": round(statistics.median(r.top_score for r in answerable), 4) if answerable else None,
            "unanswerable_median": round(statistics.median(r.top_score for r in unanswerable), 4)
            if unanswerable else None,
        },
        "questions": [{"id": r.question.id, "kind": r.question.kind, "ranked": r.ranked_documents[:5],
                       "relevant": r.question.relevant, "top_score": round(r.top_score, 4), **r.metrics}
                      for r in results],
    }


# -- answers ---------------------------------------------------------------------------------
#
# An answer is scored by key-fact recall: the share of the reference answer's content words
# (lower-cased, stop words dropped, plural/verb endings trimmed; numbers and identifiers such as
# "quantize_base" count as words) that the agent's answer contains. It is blunt (a paraphrase
# loses credit, a wrong answer that repeats the question's words gains some) but needs no judge
# model, and it moves with the thing we change: which passages the model was shown.

STOP_WORDS = frozenset("""a an the of to in on for and or is are was were be been being do does did i my me we you
your it its this that these those which what when where why how with without from by as at can could should will
would if than then there their them they into about over under not no yes so such more most much many also only
just very each both all any some other one s t""".split())
# The phrases an answer that declines uses (ours, and what models say when told to decline).
DECLINE_PATTERNS = re.compile(
    r"could not find anything|cannot answer|can't answer|i don't know|i do not know|no (?:relevant )?information|"
    r"(?:documents?|excerpts?|context|sources?) (?:do(?:es)? not|don't|doesn't) (?:contain|mention|cover|say)|"
    r"not (?:mentioned|covered|provided|found) in the (?:documents?|excerpts?|context)",
    re.IGNORECASE,
)


def key_terms(text: str) -> set[str]:
    terms = set()
    for word in re.findall(r"[A-Za-z0-9_.+-]*[A-Za-z0-9]", text.lower()):
        if word in STOP_WORDS or (len(word) < 2 and not word.isdigit()):
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
                word = word[: -len(suffix)]
                break
        terms.add(word)
    return terms


def fact_recall(answer: str, reference: str) -> float:
    wanted = key_terms(reference)
    return len(wanted & key_terms(answer)) / len(wanted) if wanted else 0.0


def declines(answer: str) -> bool:
    return bool(DECLINE_PATTERNS.search(answer))


def ask_agent(http: httpx.Client, agent_id: str, question: Question) -> tuple[str, float]:
    session = http.post(f"/v1/agents/{agent_id}/session", json={"session_name": f"eval-{question.id}"})
    session.raise_for_status()
    started = time.perf_counter()
    r = http.post(f"/v1/agents/{agent_id}/session/{session.json()['session_id']}/turn",
                  json={"messages": [{"role": "user", "content": question.question}], "stream": False})
    r.raise_for_status()
    content = r.json()["output_message"]["content"]
    return (content if isinstance(content, str) else json.dumps(content)), time.perf_counter() - started


def run_answer_eval(url: str, questions: list[Question], vector_db_id: str, model: str,
                    progress: Callable[[int, int], None] | None = None,
                    headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Ask an agent (retrieve-first RAG over `vector_db_id`) every question and score its answers:
    key-fact recall for answerable questions, declining for unanswerable ones (no `relevant`)."""
    with httpx.Client(base_url=url, timeout=httpx.Timeout(900.0, connect=10.0), headers=headers) as http:
        r = http.post("/v1/agents", json={"agent_config": {
            "model": model, "instructions": "You are a helpful assistant. Answer briefly.",
            "toolgroups": [{"name": "builtin::rag/knowledge_search", "args": {"vector_db_ids": [vector_db_id]}}],
            "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 256},
            "enable_session_persistence": False,
        }})
        r.raise_for_status()
        agent_id = r.json()["agent_id"]
        rows = []
        for done, q in enumerate(questions, start=1):
            answer, seconds = ask_agent(http, agent_id, q)
            row = {"id": q.id, "kind": q.kind, "declined": declines(answer), "seconds": round(seconds, 2),
                   "answer": answer}
            if q.relevant:
                row["fact_recall"] = round(fact_recall(answer, q.answer), 4)
            rows.append(row)
            if progress:
                progress(done, len(questions))
    answerable = [r for r in rows if "fact_recall" in r]
    unanswerable = [r for r in rows if "fact_recall" not in r]
    kinds = sorted({r["kind"] for r in answerable})

    def mean(values: list[float]) -> float | None:
        return round(statistics.fmean(values), 4) if values else None

    return {
        "model": model,
        "answerable": {
            "n": len(answerable),
            "fact_recall": mean([r["fact_recall"] for r in answerable]),
            "by_kind": {k: mean([r["fact_recall"] for r in answerable if r["kind"] == k]) for k in kinds},
            "declined": sum(r["declined"] for r in answerable),
        },
        "unanswerable": {"n": len(unanswerable), "declined": sum(r["declined"] for r in unanswerable)},
        "turn_seconds_p50": round(statistics.median(r["seconds"] for r in rows), 2) if rows else None,
        "questions": rows,
    }
