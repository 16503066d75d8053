"""The CLI against a running server: `stackrag ingest` (files, folders, URLs; creates the vector DB)
and `stackrag query`."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, new_id


def cli(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stackrag.cli", *args, "--url", url],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT),
    )


def test_ingest_folder_and_url_then_query(stack, docs_url, tmp_path):
    db = new_id("cli")
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# Hedgehogs\n\nHedgehogs roll into a ball when threatened.\n")
    (folder / "b.txt").write_text("Narwhals have a long spiral tusk.\n")
    done = cli("ingest", str(folder), f"{docs_url}/chat.rst", "--vector-db", db, "--chunk-size", "256", url=stack.url)
    assert done.returncode == 0, done.stderr
    assert f"created vector DB {db}" in done.stdout
    assert "ingested 3 documents" in done.stdout

    found = cli("query", "what do hedgehogs do when threatened?", "--vector-db", db, url=stack.url)
    assert found.returncode == 0, found.stderr
    first = found.stdout.splitlines()[0]
    assert first.startswith("1. [") and first.endswith("a.md")
    assert "roll into a ball" in found.stdout

    again = cli("ingest", str(folder / "b.txt"), "--vector-db", db, url=stack.url)
    assert again.returncode == 0 and "created vector DB" not in again.stdout


def test_cli_errors_are_clear(stack, tmp_path):
    missing = cli("ingest", str(tmp_path / "nope.txt"), "--vector-db", new_id(), url=stack.url)
    assert missing.returncode != 0
    assert "no such file" in missing.stderr
    unknown = cli("query", "x", "--vector-db", "does-not-exist", url=stack.url)
    assert unknown.returncode != 0
    assert "404" in unknown.stderr and "not found" in unknown.stderr

