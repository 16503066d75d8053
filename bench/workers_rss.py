"""Memory of `stackrag run --workers 2` with the local chat model: this checkout (one model process
shared by the workers) against a reference commit that ran llama.cpp inside each worker, one after
the other in one run, on the same Milvus server and PostgreSQL metadata store (both outside the
measured process tree, so the two sides differ only in how they hold the model).

Each side answers the same rounds of concurrent chat completions, enough that both workers serve
some; then the RSS of the server with everything it started is summed, and the processes that have
the GGUF file mapped are counted (the number of model copies in memory).

Prints JSON: per side, RSS idle and after the requests, model copies, worker processes; then the
ratios this checkout / reference.

Usage: .venv/bin/python bench/workers_rss.py [--rounds 6] [--reference 258d819]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx

from agent_turn import IN_PROCESS_COMMIT, MODEL, best_variant_file
from common import ROOT, header, rss_mb, running_server, tree_total, write_result

sys.path.insert(0, str(ROOT / "tests"))
from milvus_servers import lite_server  # noqa: E402
from postgres_server import postgres_server  # noqa: E402

CONCURRENCY = 4


def maps_gguf(pid: int) -> float:
    """1 when the process has a GGUF model file mapped (llama.cpp mmaps its weights), else 0."""
    return 1.0 if ".gguf" in Path(f"/proc/{pid}/maps").read_text() else 0.0


def processes(pid: int) -> float:
    return 1.0


def ask(url: str) -> int:
    response = httpx.post(f"{url}/v1/inference/chat-completion", timeout=600, json={
        "model_id": MODEL, "sampling_params": {"max_tokens": 16},
        "messages": [{"role": "user", "content": "Name one colour."}]})
    response.raise_for_status()
    return response.status_code


def config_yaml(milvus_uri: str, metadata_store: str) -> str:
    return ("version: 2\nproviders:\n  inference:\n  - provider_id: llama-cpp\n    provider_type: inline::llama-cpp\n"
            "    config:\n      n_ctx: 4096\n      models_dir: ${env.STACKRAG_MODELS_DIR:=}\n"
            "  vector_io:\n  - provider_id: milvus\n    provider_type: remote::milvus\n    config:\n"
            f"      uri: {milvus_uri}\n      consistency_level: Strong\n"
            f"models:\n- model_id: {MODEL}\n  provider_id: llama-cpp\n"
            "  provider_model_id: qwen2.5-coder-0.5b-instruct\n  model_type: llm\n" + metadata_store)


def measure(name: str, tmp: Path, config: Path, root: Path, env: dict, rounds: int) -> dict:
    with running_server(tmp / name, config, root=root, env=env, extra_args=["--workers", "2"]) as (proc, url, _):
        time.sleep(5)
        idle = round(tree_total(proc.pid, rss_mb), 1)
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            for _ in range(rounds):
                list(pool.map(lambda _: ask(url), range(CONCURRENCY)))
        time.sleep(2)
        return {"rss_idle_mb": idle, "rss_after_mb": round(tree_total(proc.pid, rss_mb), 1),
                "model_copies": int(tree_total(proc.pid, maps_gguf)),
                "processes": int(tree_total(proc.pid, processes)),
                "requests": rounds * CONCURRENCY}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--reference", default=IN_PROCESS_COMMIT, help="the in-process commit to compare with")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "workers_rss.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        variant = best_variant_file(tmp / "models")
        result: dict = {**header(), "workers": 2, "reference": args.reference,
                        "cpu_variant": Path(variant).stem.removeprefix("libggml-cpu-")}
        checkout = tmp / "reference"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkout), args.reference],
                       check=True, capture_output=True)
        stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)],
                       capture_output=True)
        postgres = stack.enter_context(postgres_server())
        models = {"STACKRAG_MODELS_DIR": str(tmp / "models")}
        for name, root, env in (("in_process", checkout, {**models, "GGML_BACKEND_PATH": variant}),
                                ("out_of_process", ROOT, models)):
            # Each side its own Milvus and database, so neither sees the other's state.
            uri = stack.enter_context(lite_server(tmp / f"milvus-{name}"))
            config = tmp / f"{name}.yaml"
            config.write_text(config_yaml(uri, postgres.metadata_store_yaml(postgres.create_database(name))))
            result[name] = measure(name, tmp, config, root, env, args.rounds)
    inside, outside = result["in_process"], result["out_of_process"]
    result["ratio_out_of_process_to_in_process"] = {
        key: round(outside[key] / inside[key], 3) for key in ("rss_idle_mb", "rss_after_mb")}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
