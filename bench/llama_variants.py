"""Speed of each llama.cpp CPU variant on this machine: why the build carries them all.

For every variant the CPU probe lets this machine run (and any named with --variants), one
subprocess loads that variant and the packaged chat model, then times reading a ~500-token prompt
and writing 64 tokens, --runs times (the best run is kept: the machine is shared). The
baseline (x64: SSE2 only, what a build that runs on every x86-64 CPU would be) is the reference:
each variant's ratio to it is printed. A variant whose process dies is reported with its signal.

Usage: .venv/bin/python bench/llama_variants.py [--variants x64,haswell,icelake] [--threads 2] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, header, write_result

PROMPT = ("Retrieval-augmented generation answers a question from passages found in a knowledge base. "
          "The passages are split into chunks, embedded, and stored in a vector database. ") * 14

CHILD = """
import json, sys, time
from pathlib import Path
from stackrag.providers.inference.llama_worker import Engine, load_variant
variant, model, threads, prompt, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
load_variant(variant)
engine = Engine(Path(model), 2048, threads)
llm = engine._llm
n_prompt = len(llm.tokenize(prompt.encode()))
best = None
for _ in range(runs):
    llm.reset()
    started = time.perf_counter()
    first = None
    count = 0
    for chunk in llm.create_completion(prompt, max_tokens=64, temperature=0.0, stream=True):
        if first is None:
            first = time.perf_counter()
        count += 1
    done = time.perf_counter()
    run = {"prompt_tokens_per_s": n_prompt / (first - started), "generation_tokens_per_s": (count - 1) / (done - first)}
    best = run if best is None or run["prompt_tokens_per_s"] > best["prompt_tokens_per_s"] else best
print(json.dumps({k: round(v, 1) for k, v in best.items()} | {"prompt_tokens": n_prompt}))
"""


def main() -> None:
    from stackrag.providers.inference import cpu_variants
    from stackrag.providers.inference.gguf_weights import CATALOG, DEFAULT_WEIGHTS, materialise
    from stackrag.providers.inference.llama_worker import installed_variants

    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="", help="comma-separated (default: every one that fits here)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--models-dir", default=str(Path(tempfile.gettempdir()) / "stackrag-bench-models"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "llama_variants.json"))
    args = parser.parse_args()
    cpu = cpu_variants.probe()
    fitting = cpu_variants.ranked_variants(cpu, installed_variants())
    names = args.variants.split(",") if args.variants else list(reversed(fitting))
    model = materialise(CATALOG[DEFAULT_WEIGHTS], Path(args.models_dir))
    result = {**header(), "model": DEFAULT_WEIGHTS, "threads": args.threads, "cpu_usable": sorted(cpu.usable),
              "cpu_refused": cpu.refused(), "variants": {}}
    for name in names:
        done = subprocess.run([sys.executable, "-c", CHILD, name, str(model), str(args.threads), PROMPT, str(args.runs)],
                              capture_output=True, text=True, cwd=str(ROOT))
        if done.returncode != 0:
            reason = f"signal {-done.returncode}" if done.returncode < 0 else done.stderr.strip()[-300:]
            result["variants"][name] = {"failed": reason}
            continue
        result["variants"][name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, result["variants"][name], file=sys.stderr)
    base = result["variants"].get("x64", {})
    for name, row in result["variants"].items():
        if "failed" not in row and "failed" not in base and base:
            row["prompt_vs_x64"] = round(row["prompt_tokens_per_s"] / base["prompt_tokens_per_s"], 2)
            row["generation_vs_x64"] = round(row["generation_tokens_per_s"] / base["generation_tokens_per_s"], 2)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
