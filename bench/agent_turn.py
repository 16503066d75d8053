"""The tutorial's RAG turn on the local model (examples/tutorial-offline.yaml), timed over HTTP as a
client sees it, with the model out of process (this checkout) and in process (a reference commit,
the last release that ran llama.cpp inside the server), side by side in one run: their turns
alternate, so both see the same machine load.

Prints JSON: per side, time to first token and total time of the turn (p50), how the turn splits
between retrieval (the tool_execution step) and the model (the final inference step), generation
tokens/s (streamed chat-completion deltas, one token each with llama.cpp), and RSS of the server
with everything it started, idle and after the turns; then the ratios out-of-process / in-process.

Both sides run the same llama.cpp CPU variant: the reference loads the one this checkout's chooser
picks (GGML_BACKEND_PATH), since the portable build has no backend linked in.

Usage: .venv/bin/python bench/agent_turn.py [--shared ../shared] [--runs 3] [--reference 258d819]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx

from common import ROOT, header, rss_mb, running_server, tree_total, write_result

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
QUESTIONS = [
    "What are the top 5 topics that were explained? Only list succinct bullet points.",
    "What attention mechanism does Llama3-8B use?",
    "How does activation checkpointing save memory?",
]
# The last commit whose server ran the chat model in its own process.
IN_PROCESS_COMMIT = "258d819"


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


def best_variant_file(models_dir: Path) -> str:
    from stackrag.providers.inference.gguf_weights import CATALOG, DEFAULT_WEIGHTS, materialise
    from stackrag.providers.inference.llama_worker import variant_dir
    from stackrag.providers.inference.model_process import proven_variant

    best = proven_variant(materialise(CATALOG[DEFAULT_WEIGHTS], models_dir))
    return str(variant_dir() / f"libggml-cpu-{best}.so")


class Side:
    """One server under test: its knowledge base and agent, ready for turns."""

    def __init__(self, name: str, proc, url: str, docs_dir: Path):
        self.name, self.proc, self.turns = name, proc, []
        self.http = httpx.Client(base_url=url, timeout=900)
        self.http.post("/v1/vector-dbs", json={"vector_db_id": "tutorial", "embedding_model": "all-MiniLM-L6-v2"})
        docs = [{"document_id": f"num-{i}", "content": (docs_dir / n).read_text(), "mime_type": "text/x-rst",
                 "metadata": {}}
                for i, n in enumerate(["chat.rst", "llama3.rst", "memory_optimizations.rst", "lora_finetune.rst"])]
        self.http.post("/v1/tool-runtime/rag-tool/insert", json={"vector_db_id": "tutorial", "documents": docs,
                                                                 "chunk_size_in_tokens": 1024}).raise_for_status()
        self.agent = self.http.post("/v1/agents", json={"agent_config": {
            "model": MODEL, "instructions": "You are a helpful assistant", "enable_session_persistence": False,
            "toolgroups": [{"name": "builtin::rag", "args": {"vector_db_ids": ["tutorial"]}}]}}).json()["agent_id"]
        self.gen: list[float] = []

    def turn(self, question: str) -> None:
        session = self.http.post(f"/v1/agents/{self.agent}/session", json={"session_name": "b"}).json()["session_id"]
        ttft, total, events = sse(self.http, f"/v1/agents/{self.agent}/session/{session}/turn",
                                  {"messages": [{"role": "user", "content": question}], "stream": True})
        turn = events[-1]["event"]["payload"]["turn"]
        tool = next(s for s in turn["steps"] if s["step_type"] == "tool_execution")
        self.turns.append({"ttft_s": ttft, "total_s": total, "retrieval_s": seconds(tool),
                           "inference_s": seconds(turn["steps"][-1])})

    def generation(self) -> None:
        _, total, events = sse(self.http, "/v1/inference/chat-completion", {
            "model_id": MODEL, "stream": True, "sampling_params": {"max_tokens": 128},
            "messages": [{"role": "user", "content": "Write a long paragraph about the sea."}]})
        self.gen.append(sum(1 for e in events if e["event"]["event_type"] == "progress") / total)

    def summary(self, rss_idle: float) -> dict:
        p50 = lambda key: round(statistics.median(t[key] for t in self.turns), 3)  # noqa: E731
        return {"turns": len(self.turns), "turn_ttft_s_p50": p50("ttft_s"), "turn_total_s_p50": p50("total_s"),
                "turn_retrieval_s_p50": p50("retrieval_s"), "turn_inference_s_p50": p50("inference_s"),
                "generation_tokens_per_s": round(statistics.median(self.gen), 1),
                "rss_idle_mb": rss_idle, "rss_after_mb": round(tree_total(self.proc.pid, rss_mb), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reference", default=IN_PROCESS_COMMIT, help="the in-process commit to compare with")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "agent_turn.json"))
    args = parser.parse_args()
    docs_dir = Path(args.shared) / "corpus" / "torchtune"
    config = ROOT / "examples" / "tutorial-offline.yaml"
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        tmp_path = Path(tmp)
        variant = best_variant_file(tmp_path / "models")
        result: dict = {**header(), "model": "qwen2.5-coder-0.5b-instruct Q4_K_M (llama.cpp)",
                        "cpu_variant": Path(variant).stem.removeprefix("libggml-cpu-"), "reference": args.reference}
        checkout = tmp_path / "reference"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkout), args.reference],
                       check=True, capture_output=True)
        stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)],
                       capture_output=True)
        models = {"STACKRAG_MODELS_DIR": str(tmp_path / "models")}
        sides, idle = [], {}
        for name, root, env in (("in_process", checkout, {**models, "GGML_BACKEND_PATH": variant}),
                                ("out_of_process", ROOT, models)):
            proc, url, _ = stack.enter_context(running_server(tmp_path / name, config, root=root, env=env))
            time.sleep(3)
            idle[name] = round(tree_total(proc.pid, rss_mb), 1)
            sides.append(Side(name, proc, url, docs_dir))
        for side in sides:  # warm both models before timing: the first answer loads it
            side.generation()
            side.gen.clear()
        for _ in range(args.runs):
            for question in QUESTIONS:
                for side in sides:
                    side.turn(question)
            for side in sides:
                side.generation()
        for side in sides:
            result[side.name] = side.summary(idle[side.name])
    inside, outside = result["in_process"], result["out_of_process"]
    result["ratio_out_of_process_to_in_process"] = {
        key: round(outside[key] / inside[key], 3)
        for key in ("turn_ttft_s_p50", "turn_total_s_p50", "turn_inference_s_p50", "generation_tokens_per_s",
                    "rss_after_mb")}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
