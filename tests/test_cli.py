"""The CLI against running servers, as a user types it: ingest (files, folders, URLs; creates the
vector DB; a bad document does not stop the others), query, vector-dbs list/delete, doctor on a good
and a broken install, ask and chat over the local model, and `run --demo`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
import pytest

from conftest import (ROOT, TUTORIAL_DOCS, TUTORIAL_FILES, Server, new_id, remote_vector_io, start_example_server,
                      start_server, write_config)
from milvus_servers import free_port


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



def test_ingest_reports_a_bad_document_and_ingests_the_others(stack, tmp_path):
    if stack.mode == "remote":
        pytest.skip("per-document errors are the CLI's; one Milvus mode is enough")
    db = new_id("cli")
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# Hedgehogs\n\nHedgehogs roll into a ball when threatened.\n")
    (folder / "b.txt").write_text("Narwhals have a long spiral tusk.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a PDF")
    done = cli("ingest", str(folder), str(tmp_path / "missing.md"), "--vector-db", db, url=stack.url)
    assert done.returncode == 1
    assert "ingested 2 documents" in done.stdout
    assert "✗ " + str(folder / "broken.pdf") + ": could not read PDF" in done.stderr
    assert "missing.md: no such file" in done.stderr
    assert "2 of 4 documents failed" in done.stderr
    found = cli("query", "spiral tusk", "--vector-db", db, url=stack.url)
    assert found.stdout.splitlines()[0].endswith("b.txt")

    nothing = cli("ingest", str(tmp_path / "missing.md"), "--vector-db", new_id(), url=stack.url)
    assert nothing.returncode == 1 and "no such file" in nothing.stderr
    listed = cli("vector-dbs", "list", url=stack.url)
    assert "missing" not in listed.stdout  # nothing to send: no empty vector DB was made


def test_vector_dbs_list_and_delete(stack, tmp_path):
    if stack.mode == "remote":
        pytest.skip("list and delete go through the same routes on both Milvus modes")
    db = new_id("cli")
    (tmp_path / "a.md").write_text("Quokkas live on Rottnest Island.\n")
    assert cli("ingest", str(tmp_path / "a.md"), "--vector-db", db, url=stack.url).returncode == 0

    listed = cli("vector-dbs", "list", url=stack.url)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\n")[0].split() == ["id", "embedding", "model", "dimension", "provider", "chunks"]
    row = next(line for line in listed.stdout.splitlines() if line.startswith(db))
    assert row.split() == [db, "all-MiniLM-L6-v2", "384", "milvus", "1"]

    kept = subprocess.run([sys.executable, "-m", "stackrag.cli", "vector-dbs", "delete", db, "--url", stack.url],
                          input="n\n", capture_output=True, text=True, timeout=60)
    assert kept.returncode == 1 and "Aborted" in kept.stderr
    assert db in cli("vector-dbs", "list", url=stack.url).stdout
    deleted = cli("vector-dbs", "delete", db, "--yes", url=stack.url)
    assert deleted.returncode == 0 and f"deleted vector DB {db}" in deleted.stdout
    assert db not in cli("vector-dbs", "list", url=stack.url).stdout
    again = cli("vector-dbs", "delete", db, "--yes", url=stack.url)
    assert again.returncode == 1 and "404" in again.stderr and "not found" in again.stderr


def test_unreachable_server_is_a_clear_error():
    down = cli("vector-dbs", "list", url=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "cannot reach stackrag" in down.stderr and "stackrag run" in down.stderr
    assert "Traceback" not in down.stderr


# -- doctor ----------------------------------------------------------------------------------


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stackrag.cli", "doctor", *args],
                          capture_output=True, text=True, timeout=120, cwd=str(ROOT))


def test_doctor_passes_on_a_good_install(stack, tmp_path):
    if stack.mode == "remote":
        pytest.skip("one good install is enough")
    done = doctor("--config", str(stack.config_path), "--data-dir", str(tmp_path), "--url", stack.url)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert all(line.startswith("✓ ") for line in lines), done.stdout
    names = [line[2:].split(": ")[0] for line in lines]
    assert names[:2] == ["config", "data dir"] and "embedding model all-MiniLM-L6-v2" in names
    assert any(n.startswith("llm model") for n in names) and "server" in names and "server auth" in names
    assert "sha256 verified" in done.stdout


def test_doctor_names_what_is_wrong_and_how_to_fix_it(tmp_path):
    config = write_config(tmp_path / "run.yaml", remote_vector_io(f"http://127.0.0.1:{free_port()}"))
    config.write_text(config.read_text() + "retreival:\n  mode: hybrid\n")
    done = doctor("--config", str(config), "--data-dir", str(tmp_path / "data"),
                  "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    failed = {line.split(": ")[0]: line for line in done.stdout.splitlines() if line.startswith("✗ ")}
    assert set(failed) == {"✗ config", "✗ milvus (milvus, remote::milvus)", "✗ server"}, done.stdout
    assert "'retreival' (did you mean 'retrieval'?)" in failed["✗ config"]
    assert "unreachable" in failed["✗ milvus (milvus, remote::milvus)"]
    assert "→ start Milvus at" in failed["✗ milvus (milvus, remote::milvus)"]
    assert "→ start it with `stackrag run`" in failed["✗ server"]

    broken = tmp_path / "broken.yaml"
    broken.write_text("providers: [not, a, mapping\n")
    done = doctor("--config", str(broken))
    assert done.returncode == 1 and done.stdout.startswith("✗ config:") and "not valid YAML" in done.stdout


# -- ask and chat (a local chat model: slow on 2 cores, so short answers and one shared DB) --


@pytest.fixture(scope="module")
def chat_db(agent_stack) -> str:
    db = new_id("cli-chat")
    docs = [str(TUTORIAL_DOCS / name) for name in ("chat.rst", "llama3.rst", "lora_finetune.rst")]
    done = cli("ingest", *docs, "--vector-db", db, url=agent_stack.url)
    assert done.returncode == 0, done.stderr
    return db


def test_ask_streams_an_answer_with_its_sources(agent_stack, chat_db):
    done = cli("ask", "What is the Llama3 chat format?", "--vector-db", chat_db, "--max-tokens", "64",
               "--max-chunks", "2", url=agent_stack.url)
    assert done.returncode == 0, done.stderr
    answer, sources = done.stdout.split("\nsources:\n")
    assert answer.strip() and "llama" in answer.lower(), done.stdout
    listed = [line.split() for line in sources.splitlines() if line.strip()]
    assert listed and all(score.startswith("[") for score, _ in listed)
    assert {Path(doc).name for _, doc in listed} & {"chat.rst", "llama3.rst"}, sources
    # The command's agent is removed when it is done.
    agents = httpx.get(f"{agent_stack.url}/v1/agents").json()["data"]
    assert not [a for a in agents if chat_db in json.dumps(a["agent_config"])]

    missing = cli("ask", "anything?", "--vector-db", "no-such-db", url=agent_stack.url)
    assert missing.returncode == 1
    assert "vector DB 'no-such-db' does not exist" in missing.stderr and "stackrag ingest" in missing.stderr


def test_chat_keeps_the_conversation_and_cancels_cleanly(agent_stack, chat_db):
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "stackrag.cli", "chat", "--vector-db", chat_db,
                                           "--max-tokens", "64", "--max-chunks", "2", "--url", agent_stack.url],
                          cwd=str(ROOT), encoding="utf-8", timeout=300, dimensions=(40, 200))
    try:
        child.expect_exact("you> ")
        child.sendline("What is LoRA?")
        child.expect_exact("sources:")
        child.expect_exact("you> ")
        # "it" is the first turn's subject: the server keeps the conversation in the session.
        child.sendline("How do I enable it for a Llama3 model in torchtune?")
        child.expect_exact("How do I enable it for a Llama3 model in torchtune?\r\n")
        child.expect_exact("sources:")
        assert "lora" in child.before.lower(), child.before
        child.expect_exact("you> ")
        # One agent session on the server, holding both turns.
        agent = next(a for a in httpx.get(f"{agent_stack.url}/v1/agents").json()["data"]
                     if chat_db in json.dumps(a["agent_config"]))
        sessions = httpx.get(f"{agent_stack.url}/v1/agents/{agent['agent_id']}/sessions").json()["data"]
        assert [len(s["turns"]) for s in sessions] == [2]

        # Ctrl-C while the answer streams stops it; the conversation goes on. An answer can be
        # whole before the interrupt lands (held back until its end when it starts like a tool
        # call, or simply short): then the question is asked again, at most three times.
        for attempt in range(3):
            child.sendline("Explain step by step how LoRA finetuning of Llama3 works in torchtune.")
            child.expect_exact("torchtune.\r\n")
            child.expect(r"\w")  # the first token of the answer
            child.sendintr()
            if child.expect_exact(["[answer cancelled]", "sources:"]) == 0:
                break
            child.expect_exact("you> ")
        else:
            pytest.fail("no answer was still streaming when Ctrl-C came, three times")
        child.expect_exact("you> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    agents = httpx.get(f"{agent_stack.url}/v1/agents").json()["data"]
    assert not [a for a in agents if chat_db in json.dumps(a["agent_config"])]


# -- run --demo ------------------------------------------------------------------------------


def wait_for_log(server: Server, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log_path.read_text(errors="replace")
        if text in log:
            return log
        assert server.process.poll() is None, server.log_tail()
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not logged in {timeout} s:\n{server.log_tail()}")


def demo_chunks(url: str) -> int:
    listed = cli("vector-dbs", "list", url=url)
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("demo "))
    return int(row[-1])


READY = "demo: vector DB 'demo' is ready with the 4 tutorial documents"
ALREADY = "demo: vector DB 'demo' already holds the 4 tutorial documents; nothing to ingest"


def test_run_demo_ingests_in_the_background_once(tmp_path):
    """Small stand-ins for the four documents (the real ones are the slow test below)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in TUTORIAL_FILES:
        (docs / name).write_text(f"{name}\n{'=' * len(name)}\n\nThis tutorial is about {name[:-4]}.\n")
    data = tmp_path / "data"
    server = start_server(data, None, args=["--demo", "--demo-docs", str(docs)])
    try:
        log = wait_for_log(server, READY, 120)
        # The server answered /v1/health (start_server waited for it) before ingesting.
        assert log.index("Application startup complete") < log.index("demo: 1/4 chat.rst")
        assert f"from {docs} (offline)" in log
        chunks = demo_chunks(server.url)
        assert chunks == 4
    finally:
        server.stop()
    again = start_server(data, None, args=["--demo", "--demo-docs", str(docs)])
    try:
        log = wait_for_log(again, ALREADY, 60)
        assert "demo: ingesting" not in log
        assert demo_chunks(again.url) == chunks
    finally:
        again.stop()


def test_demo_documents_come_from_github_without_a_local_copy(tmp_path, monkeypatch):
    from stackrag.cli import demo

    monkeypatch.setattr(demo, "DEFAULT_DOCS", tmp_path / "absent")
    documents, origin = demo.demo_documents(None)
    assert [d["document_id"] for d in documents] == list(TUTORIAL_FILES)
    assert documents[0]["content"] == f"{demo.TUTORIAL_URL}/chat.rst"
    assert "needs internet" in origin and "--demo-docs" in origin
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "chat.rst").write_text("Chat\n")
    with pytest.raises(click.ClickException, match="lacks llama3.rst, memory_optimizations.rst"):
        demo.demo_documents(tmp_path / "partial")


@pytest.mark.slow
def test_run_demo_answers_about_the_tutorial_documents(tmp_path, models_dir):
    """`make run` on a fresh data dir: the four tutorial documents from ../shared, then `ask`."""
    data = tmp_path / "data"
    server = start_example_server(data, models_dir, args=["--demo"])
    try:
        log = wait_for_log(server, READY, 600)
        assert f"from {TUTORIAL_DOCS} (offline)" in log
        chunks = demo_chunks(server.url)
        assert chunks > 20
        done = cli("ask", "What is the Llama3 chat format?", "--vector-db", "demo", "--max-tokens", "96",
                   "--max-chunks", "2", url=server.url)
        assert done.returncode == 0, done.stderr
        answer, sources = done.stdout.split("\nsources:\n")
        assert "llama" in answer.lower() or "token" in answer.lower(), answer
        assert "chat.rst" in sources or "llama3.rst" in sources, sources
    finally:
        server.stop()
    again = start_example_server(data, models_dir, args=["--demo"])
    try:
        log = wait_for_log(again, ALREADY, 60)
        assert "demo: ingesting" not in log and demo_chunks(again.url) == chunks
    finally:
        again.stop()
