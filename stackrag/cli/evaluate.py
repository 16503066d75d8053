"""`stackrag eval`: retrieval (and optionally answer) quality of a running server on a question set."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import click
import httpx

from .client import auth_headers, connect, url_option


@click.command("eval")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False))
@click.option("--corpus", required=True, type=click.Path(exists=True, file_okay=False),
              help="folder of documents; a document's id is its path in the folder")
@url_option
@click.option("--mode", type=click.Choice(["vector", "keyword", "hybrid"]), default="hybrid", show_default=True)
@click.option("--chunk-size", default=512, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="also write the full result here")
@click.option("--answers", "answer_model", metavar="MODEL",
              help="also ask an agent on this chat model every question and score its answers (slow)")
def evaluate(questions: str, corpus: str, url: str, mode: str, chunk_size: int, json_out: str | None,
             answer_model: str | None) -> None:
    """Measure retrieval: recall@k, MRR@10, nDCG@10 per question kind, and latency; with --answers,
    the answers too (key-fact recall, declined questions)."""
    from rich.console import Console
    from rich.table import Table

    from .evaluation import load_questions, run_answer_eval, run_eval

    vector_db_id = f"eval-{uuid.uuid4().hex[:10]}"
    try:
        result = run_eval(url, Path(questions), Path(corpus), mode=mode, chunk_size=chunk_size,
                          vector_db_id=vector_db_id, keep=bool(answer_model), headers=auth_headers(),
                          progress=lambda done, total: click.echo(f"ingested {done}/{total} documents", err=True))
        if answer_model:
            try:
                result["answers"] = run_answer_eval(
                    url, load_questions(Path(questions)), vector_db_id, answer_model, headers=auth_headers(),
                    progress=lambda done, total: click.echo(f"answered {done}/{total} questions", err=True))
            finally:
                with connect(url) as client:
                    client.delete(f"/v1/vector-dbs/{vector_db_id}")
    except (httpx.HTTPError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"retrieval ({mode}, {chunk_size}-token chunks, {result['ingestion']['chunks']} chunks)")
    metrics = [k for k in result["overall"] if k != "n"]
    for column in ["kind", "n", *metrics]:
        table.add_column(column, justify="right" if column != "kind" else "left")
    for kind, row in [*result["by_kind"].items(), ("all", result["overall"])]:
        table.add_row(kind, str(row["n"]), *(f"{row[m]:.3f}" for m in metrics))
    Console().print(table)
    click.echo(f"latency p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms; "
               f"median top score: answerable {result['top_score']['answerable_median']}, "
               f"unanswerable {result['top_score']['unanswerable_median']}")
    answers = result.get("answers")
    if answers:
        ok, no = answers["answerable"], answers["unanswerable"]
        click.echo(f"answers ({answers['model']}): key-fact recall {ok['fact_recall']} over {ok['n']} questions, "
                   f"{ok['declined']} of them declined; {no['declined']}/{no['n']} unanswerable declined; "
                   f"turn p50 {answers['turn_seconds_p50']} s")
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
