"""The tutorial's RAG turn on the local model (examples/tutorial-offline.yaml), timed over HTTP as a
client sees it. Prints JSON: time to first token and total time of the turn, generation tokens/s
(streamed chat-completion deltas, one token each with llama.cpp), server RSS idle and with the model
loaded, and how the turn's time splits between retrieval (the tool_execution step) and the model
(the final inference step), from the steps' own timestamps.

Usage: .venv/bin/python bench/agent_turn.py [--shared ../shared] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from common import ROOT, header, rss_mb, running_server, write_result
MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
QUESTIONS = [
    "What are the top 5 topics that were explained? Only list succinct bullet points.",
    "What attention mechanism does Llama3-8B use?",
    "How does activation checkpointing save memory?",
]


def seconds(step: dict) -> float:
    parse = lambda v: datetime.fromisoformat(v.replace("Z", "+00:00"))  # noqa: E731
    return (parse(step["completed_at"]) - parse(step["started_at"])).total_seconds()


def sse(http: httpx.Client, path: str, body: dict) -> tuple[float, float, list[dict]]:
    """(seconds to the first text delta, total seconds, events)."""
    started = time.perf_counter()
    first = None
    events = []
    with http.stream("POST", path, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            events.append(event)
            payload = event.get("event", {}).get("payload") or event.get("event") or {}
            delta = payload.get("delta") or {}
            if first is None and delta.get("type") == "text" and delta.get("text"):
                first = time.perf_counter() - started
    return first or float("nan"), time.perf_counter() - started, events


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "agent_turn.json"))
    args = parser.parse_args()
    docs_dir = Path(args.shared) / "corpus" / "torchtune"
    result: dict = {**header(), "model": "qwen2.5-coder-0.5b-instruct Q4_K_M (llama.cpp)"}
    with tempfile.TemporaryDirectory() as tmp:
        with running_server(Path(tmp), ROOT / "examples" / "tutorial-offline.yaml") as (proc, url, _):
            time.sleep(1)
            result["rss_idle_mb"] = rss_mb(proc.pid)
            with httpx.Client(base_url=url, timeout=900) as http:
                http.post("/v1/vector-dbs", json={"vector_db_id": "tutorial", "embedding_model": "all-MiniLM-L6-v2"})
                docs = [{"document_id": f"num-{i}", "content": (docs_dir / n).read_text(), "mime_type": "text/x-rst",
                         "metadata": {}}
                        for i, n in enumerate(["chat.rst", "llama3.rst", "memory_optimizations.rst", "lora_finetune.rst"])]
                http.post("/v1/tool-runtime/rag-tool/insert", json={"vector_db_id": "tutorial", "documents": docs,
                                                                     "chunk_size_in_tokens": 1024}).raise_for_status()
                agent = http.post("/v1/agents", json={"agent_config": {
                    "model": MODEL, "instructions": "You are a helpful assistant", "enable_session_persistence": False,
                    "toolgroups": [{"name": "builtin::rag", "args": {"vector_db_ids": ["tutorial"]}}]}}).json()["agent_id"]
                turns = []
                for run in range(args.runs):
                    for question in QUESTIONS:
                        session = http.post(f"/v1/agents/{agent}/session", json={"session_name": "b"}).json()["session_id"]
                        ttft, total, events = sse(http, f"/v1/agents/{agent}/session/{session}/turn",
                                                  {"messages": [{"role": "user", "content": question}], "stream": True})
                        turn = events[-1]["event"]["payload"]["turn"]
                        answer = turn["output_message"]["content"]
                        tool = next(s for s in turn["steps"] if s["step_type"] == "tool_execution")
                        turns.append({"question": question, "ttft_s": ttft, "total_s": total,
                                      "retrieval_s": seconds(tool), "inference_s": seconds(turn["steps"][-1]),
                                      "answer_chars": len(answer)})
                result["rss_model_loaded_mb"] = rss_mb(proc.pid)
                result["turn_ttft_s_p50"] = round(statistics.median(t["ttft_s"] for t in turns), 2)
                result["turn_total_s_p50"] = round(statistics.median(t["total_s"] for t in turns), 2)
                result["turn_retrieval_s_p50"] = round(statistics.median(t["retrieval_s"] for t in turns), 3)
                result["turn_inference_s_p50"] = round(statistics.median(t["inference_s"] for t in turns), 2)
                result["tutorial_turn"] = {k: round(v, 2) if isinstance(v, float) else v
                                           for k, v in turns[0].items() if k != "question"}
                _, gen_total, events = sse(http, "/v1/inference/chat-completion", {
                    "model_id": MODEL, "stream": True, "sampling_params": {"max_tokens": 128},
                    "messages": [{"role": "user", "content": "Write a long paragraph about the sea."}]})
                deltas = sum(1 for e in events if e["event"]["event_type"] == "progress")
                result["generation_tokens_per_s"] = round(deltas / gen_total, 1)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
