"""Answers you can check, measured: the local model answers dev-set questions through a RAG agent, and
each answer sentence is attributed to the passages it was given (stackrag/services/citations.py).

Prints JSON: per set, the share of answer sentences supported, and every sentence marked unsupported
with its question, answer and passages (bench/results/citations.json), for judging by hand whether
the mark is right: the closing note says how many were judged and how many were indeed unsupported.

Usage: .venv/bin/python bench/citations.py [--sets torchtune] [--questions 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

from common import ROOT, header, running_server, write_result
from devsets import load

sys.path.insert(0, str(ROOT))

from stackrag.cli.evaluation import ingest  # noqa: E402
from stackrag.providers.inference.sentence_transformers import MiniLMEmbedder  # noqa: E402
from stackrag.services.citations import Passage, attribute, supported_share  # noqa: E402

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def turn(http: httpx.Client, agent: str, question: str) -> tuple[str, list[Passage], list | None]:
    session = http.post(f"/v1/agents/{agent}/session", json={"session_name": "c"}).json()["session_id"]
    done = http.post(f"/v1/agents/{agent}/session/{session}/turn",
                     json={"messages": [{"role": "user", "content": question}], "stream": False}).json()
    tool = next((s for s in done["steps"] if s["step_type"] == "tool_execution"), None)
    passages = []
    if tool is not None:
        meta = tool["tool_responses"][0].get("metadata") or {}
        passages = [Passage(d, c) for d, c in zip(meta.get("document_ids", []), meta.get("chunks", []))]
    content = done["output_message"]["content"]
    return content if isinstance(content, str) else str(content), passages, done.get("citations")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default="torchtune")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "citations.json"))
    args = parser.parse_args()
    embedder = MiniLMEmbedder()
    result: dict = {**header(), "model": "qwen2.5-coder-0.5b-instruct", "sets": {}}
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), ROOT / "examples" / "tutorial-offline.yaml") \
            as (_, url, _):
        http = httpx.Client(base_url=url, timeout=900)
        for dev in load(args.sets.split(","), ROOT.parent / "shared"):
            name = dev.name
            db = f"cite-{name}"
            ingest(http, db, dev.corpus, 512)
            agent = http.post("/v1/agents", json={"agent_config": {
                "model": MODEL, "instructions": "Answer from the documents, briefly.",
                "toolgroups": [{"name": "builtin::rag", "args": {"vector_db_ids": [db]}}]}}).json()["agent_id"]
            answers, marked = [], []
            for question in dev.questions[: args.questions]:
                answer, passages, served = turn(http, agent, question.question)
                found = attribute(answer, passages, embedder)
                # The server attributes the same way (bounded); its turn's citations must agree.
                answers.append({"question": question.question, "answer": answer, "sentences": len(found),
                                "supported": sum(s.supported for s in found),
                                "server_agrees": served == [s.wire() for s in found],
                                "checked": [s.wire() for s in found]})
                marked += [{"question": question.question, "sentence": s.text, "answer": answer,
                            "passages": [p.text[:600] for p in passages]} for s in found if not s.supported]
            total = sum(a["sentences"] for a in answers)
            result["sets"][name] = {
                "answers": answers,
                "questions": len(answers), "sentences": total,
                "server_agrees": sum(a["server_agrees"] for a in answers),
                "supported_share": round(sum(a["supported"] for a in answers) / total, 3) if total else None,
                "marked_unsupported": marked,
            }
            print(name, result["sets"][name]["supported_share"], len(marked), file=sys.stderr)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
