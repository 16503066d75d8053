"""Charts of the benchmark results: reads bench/results/*.json, writes PNGs beside them.

- scale_latency.png  query p50/p99 against chunks (log x), Milvus Lite vs remote (scale.json)
- ingest.png         ingestion chunks/s, server vs raw embedder (ingest_query.json)
- rss.png            server RSS idle / after ingest / with the LLM (ingest_query, agent_turn, scale)
- retrieval.png      retrieval quality per dev set, first variant (retrieval_eval.json)
A chart whose input is missing is skipped; missing keys are left out.

Usage: .venv/bin/python bench/plot.py [--results bench/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BACKEND_STYLE = {"lite": ("tab:blue", "Milvus Lite"), "remote": ("tab:orange", "remote Milvus")}
ENDPOINTS = [("rag_tool_query", "rag-tool query (default mode)"), ("rag_tool_query_vector", "rag-tool query, vector"),
             ("vector_io_query_vector", "vector-io query, vector"),
             ("vector_io_query_hybrid", "vector-io query, hybrid")]


def load(results: Path, name: str) -> dict:
    try:
        return json.loads((results / name).read_text())
    except (OSError, ValueError):
        return {}


def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def bar_labels(ax, bars, fmt="{:.0f}") -> None:
    ax.bar_label(bars, labels=[fmt.format(b.get_height()) for b in bars], fontsize=8, padding=2)


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def plot_scale(scale: dict, out: Path) -> None:
    backends = get(scale, "backends") or {}
    if not backends:
        return
    fig, axes = plt.subplots(1, len(ENDPOINTS), figsize=(4.5 * len(ENDPOINTS), 4), sharey=True)
    for ax, (key, title) in zip(axes, ENDPOINTS):
        for name, data in backends.items():
            color, label = BACKEND_STYLE.get(name, (None, name))
            rows = [s for s in data.get("sizes") or [] if get(s, key, "p50_ms") is not None]
            xs = [s["chunks"] for s in rows]
            ax.plot(xs, [s[key]["p50_ms"] for s in rows], "o-", color=color, label=f"{label} p50")
            ax.plot(xs, [s[key].get("p99_ms") for s in rows], "s--", color=color, alpha=0.6, label=f"{label} p99")
            store = "store_search_hybrid" if "hybrid" in key or key == "rag_tool_query" else "store_search_vector"
            srows = [s for s in rows if get(s, store, "p50_ms") is not None]
            ax.plot([s["chunks"] for s in srows], [s[store]["p50_ms"] for s in srows], ":", color=color,
                    label=f"{label} store only p50 ({store.rsplit('_', 1)[1]})")
        embed = get(scale, "raw_query_embedding_p50_ms")
        if embed:
            ax.axhline(embed, color="grey", lw=0.8, ls="-.", label="query embedding p50")
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = sorted({s["chunks"] for d in backends.values() for s in d.get("sizes") or []})
        ax.set_xticks(sizes, [f"{n / 1000:g}k" for n in sizes])
        ax.minorticks_off()
        ax.set_title(title)
        ax.set_xlabel("chunks in the collection")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"Query latency vs corpus size ({get(scale, 'machine') or ''}, {get(scale, 'date') or ''})",
                 fontsize=9)
    save(fig, out / "scale_latency.png")


def plot_ingest(ingest: dict, out: Path) -> None:
    pairs = [("raw embedder", get(ingest, "raw_embedder", "chunks_per_s")),
             ("server (rag-tool insert)", get(ingest, "server_ingest", "chunks_per_s"))]
    pairs = [(k, v) for k, v in pairs if v is not None]
    if not pairs:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bars = ax.bar([k for k, _ in pairs], [v for _, v in pairs], color=["tab:grey", "tab:blue"][: len(pairs)])
    bar_labels(ax, bars, "{:.2f}")
    ratio = get(ingest, "ingest_vs_raw")
    ax.set_title("Ingestion, 512-token chunks" + (f" (server/raw = {ratio:.2f})" if ratio else ""), fontsize=10)
    ax.set_ylabel("chunks / s")
    save(fig, out / "ingest.png")


def plot_rss(ingest: dict, agent: dict, scale: dict, out: Path) -> None:
    pairs = [("idle", get(ingest, "rss_idle_mb")),
             (f"after ingest\n({get(ingest, 'server_ingest', 'chunks') or '?'} chunks)",
              get(ingest, "rss_after_ingest_mb")),
             ("after 10k\nchunks", get(ingest, "rss_after_10k_mb")),
             ("LLM loaded", get(agent, "rss_model_loaded_mb"))]
    pairs = [(k, v) for k, v in pairs if v is not None]
    backends = get(scale, "backends") or {}
    if not pairs and not backends:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if pairs:
        bars = axes[0].bar([k for k, _ in pairs], [v for _, v in pairs], color="tab:blue")
        bar_labels(axes[0], bars)
    axes[0].set_title("stackrag server RSS (Milvus Lite)", fontsize=10)
    axes[0].set_ylabel("MB")
    for name, data in backends.items():
        color, label = BACKEND_STYLE.get(name, (None, name))
        sizes = data.get("sizes") or []
        xs = [s["chunks"] for s in sizes if "rss_after_insert_mb" in s]
        axes[1].plot(xs, [s["rss_after_insert_mb"] for s in sizes if "rss_after_insert_mb" in s], "o-",
                     color=color, label=f"{label}: stackrag")
        ms = [s for s in sizes if "milvus_rss_mb" in s]
        if ms:
            axes[1].plot([s["chunks"] for s in ms], [s["milvus_rss_mb"] for s in ms], "s--", color=color,
                         label=f"{label}: Milvus server")
    if backends:
        axes[1].set_xscale("log")
        axes[1].legend(fontsize=8)
        axes[1].grid(True, which="both", alpha=0.3)
    axes[1].set_title("RSS after inserting N chunks (scale.json, cumulative)", fontsize=10)
    axes[1].set_xlabel("chunks")
    save(fig, out / "rss.png")


def plot_retrieval(retrieval: dict, out: Path) -> None:
    """The first variant of bench/retrieval_eval.py: each metric per dev set and the mean over sets."""
    variants = retrieval.get("variants") or {}
    if not variants:
        return
    name, variant = next(iter(variants.items()))
    groups = {**{s: v["overall"] for s, v in variant["sets"].items()}, "mean": variant["mean"]["overall"]}
    metrics = ("recall@1", "recall@5", "mrr@10", "ndcg@10")
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (group, overall) in enumerate(groups.items()):
        values = [overall.get(m) or 0.0 for m in metrics]
        bars = ax.bar([x + i * width for x in range(len(metrics))], values, width, label=group)
        bar_labels(ax, bars, "{:.2f}")
    ax.set_xticks([x + width * (len(groups) - 1) / 2 for x in range(len(metrics))], metrics)
    ax.set_ylim(0, 1.25)
    ax.set_title(f"Retrieval quality per dev set ({name})", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=len(groups))
    save(fig, out / "retrieval.png")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    results = Path(args.results)
    ingest = load(results, "ingest_query.json")
    scale = load(results, "scale.json")
    plot_scale(scale, results)
    plot_ingest(ingest, results)
    plot_rss(ingest, load(results, "agent_turn.json"), scale, results)
    plot_retrieval(load(results, "retrieval_eval.json"), results)


if __name__ == "__main__":
    main()
