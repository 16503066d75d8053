"""Run Llama Stack's own integration tests against a fresh stackrag server (`make conformance`).

The tests come from a clone of the upstream repository that the user gives (LLAMA_STACK_SRC): for
each pinned tag, `git archive` extracts tests/ (and the root conftest.py, where the tag has one)
into a build folder outside this repository; nothing of it is copied into stackrag. Each tag gets a
venv of its own with the harness's imports (the llama-stack release of that tag, its client, an
openai SDK of its era). Then one stackrag server starts on a free port, every suite runs against it
by URL, and the counts are printed (docs/conformance.md says what each skip means).

One change is made to the extracted tests, and it is printed: the torchtune tutorial URLs on GitHub
become a server on 127.0.0.1 that serves the same four files from ../shared/corpus/torchtune, since
this machine (and CI) has no internet.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.server
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from milvus_servers import free_port, lite_server  # noqa: E402  (the test suite's Milvus server helper)

SHARED = Path(os.environ.get("STACKRAG_SHARED", ROOT.parent / "shared")).resolve()
TUTORIAL_URL = "https://raw.githubusercontent.com/pytorch/torchtune/main/docs/source/tutorials"
TEXT_MODEL = "qwen2.5-coder-0.5b-instruct"
EMBEDDING = ["--embedding-model=all-MiniLM-L6-v2", "--embedding-dimension=384"]


@dataclass
class Suite:
    tag: str
    python: str  # a version prefix; the interpreter is found on this machine
    requirements: list[str]
    tests: list[str]
    extra_args: list[str] = field(default_factory=list)
    # The agents tests that need what stackrag does not claim (shields, web search, a code interpreter).
    select: str | None = None


SUITES = {
    "v0.2.12": Suite(
        tag="v0.2.12", python="3.11",
        requirements=["llama-stack==0.2.12", "llama-stack-client==0.2.12", "openai==1.71.0", "pytest==8.3.4",
                      "pytest-asyncio==0.25.3", "requests"],
        tests=["tests/integration/vector_io/test_vector_io.py", "tests/integration/tool_runtime/test_rag_tool.py",
               # The agents tests of what stackrag claims: the rest need a safety shield, web search
               # or a code interpreter.
               *(f"tests/integration/agents/test_agents.py::{name}" for name in (
                   "test_agent_name", "test_tool_config", "test_custom_tool", "test_custom_tool_infinite_loop",
                   "test_tool_choice_required", "test_tool_choice_none", "test_tool_choice_get_boiling_point",
                   "test_rag_agent", "test_rag_agent_with_attachments", "test_rag_and_code_agent",
                   "test_create_turn_response", "test_multi_tool_calls"))],
    ),
    "v0.7.1": Suite(
        tag="v0.7.1", python="3.12",
        # openai 2.5.0 is the release's own lock; a newer SDK breaks its test recorder
        # ("'LlamaStackClient' object has no attribute '_provider_runtime'").
        requirements=["llama-stack==0.7.1", "llama-stack-client==0.7.1", "openai==2.5.0", "pytest==8.4.2",
                      "pytest-asyncio==1.1.0", "mcp==1.25.0", "ollama==0.6.0"],
        tests=["tests/integration/files/test_files.py", "tests/integration/vector_io/test_openai_vector_stores.py",
               "tests/integration/responses/test_file_search.py",
               *(f"tests/integration/responses/test_tool_responses.py::{name}" for name in (
                   "test_response_non_streaming_file_search",
                   "test_response_non_streaming_file_search_empty_vector_store"))],
        extra_args=["--inference-mode=live"],
    ),
}


def interpreter(version: str) -> str:
    candidates = [f"python{version}", *sorted(str(p) for p in (Path.home() / ".pyenv" / "versions").glob(
        f"{version}.*/bin/python"))]
    for candidate in candidates:
        try:
            out = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return candidate
    sys.exit(f"Python {version} is needed for the tests of this tag and was not found (tried {candidates})")


def extract(src: Path, suite: Suite, build: Path) -> Path:
    """The tag's tests (recordings left out: live mode never reads them) into build/TAG/src."""
    dest = build / suite.tag / "src"
    if dest.exists():
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.mkdir(parents=True)
    names = subprocess.run(["git", "-C", str(src), "ls-tree", "--name-only", suite.tag],
                           capture_output=True, text=True, check=True).stdout.split()
    paths = ["tests"] + [n for n in ("conftest.py", "pyproject.toml") if n in names]
    archive = subprocess.run(["git", "-C", str(src), "archive", "--format=tar", suite.tag, *paths,
                              ":(exclude,glob)**/recordings/**"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def localize_urls(dest: Path, docs_url: str) -> list[str]:
    changed = []
    for path in sorted((dest / "tests").rglob("*.py")):
        text = path.read_text()
        if TUTORIAL_URL in text:
            path.write_text(text.replace(TUTORIAL_URL, docs_url))
            changed.append(str(path.relative_to(dest)))
    return changed


def venv(suite: Suite, build: Path) -> Path:
    """The tag's venv, built once per requirement list (a stamp holds its hash)."""
    path = build / suite.tag / "venv"
    stamp = path / ".stackrag-requirements"
    wanted = hashlib.sha256("\n".join(suite.requirements).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == wanted:
        return path
    print(f"[{suite.tag}] building the test venv (Python {suite.python}): {' '.join(suite.requirements)}", flush=True)
    subprocess.run(["rm", "-rf", str(path)], check=True)
    subprocess.run([interpreter(suite.python), "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *suite.requirements], check=True)
    stamp.write_text(wanted)
    return path


def server_config(path: Path, vector_io: str) -> Path:
    path.write_text(
        "version: 2\n"
        "providers:\n"
        "  inference:\n"
        "  - provider_id: llama-cpp\n"
        "    provider_type: inline::llama-cpp\n"
        "  vector_io:\n" + vector_io + "models:\n"
        f"- model_id: {TEXT_MODEL}\n"
        "  provider_id: llama-cpp\n"
        "  model_type: llm\n"
        "- model_id: all-MiniLM-L6-v2\n"
        "  provider_id: sentence-transformers\n"
        "  model_type: embedding\n"
        "  metadata: {embedding_dimension: 384}\n"
    )
    return path


class Server:
    def __init__(self, data_dir: Path, vector_io: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / "server.log"
        config = server_config(data_dir / "run.yaml", vector_io)
        env = {**os.environ, "STACKRAG_ALLOW_PRIVATE_URLS": "1", "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stackrag.cli", "run", "--port", str(self.port), "--data-dir", str(data_dir),
                 "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"stackrag exited with {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"stackrag did not become healthy; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    xfailed: int = 0
    errors: int = 0
    failures: list[str] = field(default_factory=list)
    skips: dict[str, list[str]] = field(default_factory=dict)

    def line(self) -> str:
        extra = "".join(f", {n} {k}" for k, n in (("xfailed", self.xfailed), ("errors", self.errors)) if n)
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped{extra}"


def read_junit(path: Path) -> Counts:
    counts = Counts()
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        skipped = case.find("skipped")
        if skipped is not None:
            if skipped.get("type") == "pytest.xfail":
                counts.xfailed += 1
                continue
            counts.skipped += 1
            reason = (skipped.get("message") or "").strip()
            counts.skips.setdefault(reason, []).append(name)
        elif case.find("failure") is not None:
            counts.failed += 1
            counts.failures.append(name)
        elif case.find("error") is not None:
            counts.errors += 1
            counts.failures.append(name + " (error)")
        else:
            counts.passed += 1
    return counts


def run_suite(suite: Suite, src: Path, build: Path, server: Server, docs_url: str, keyword: str | None,
              timeout: int) -> Counts:
    dest = extract(src, suite, build)
    for changed in localize_urls(dest, docs_url):
        print(f"[{suite.tag}] {changed}: tutorial URLs -> {docs_url} (a local copy)")
    env_dir = venv(suite, build)
    junit = build / suite.tag / "junit.xml"
    junit.unlink(missing_ok=True)
    select = " and ".join(f"({k})" for k in (suite.select, keyword) if k)
    cmd = [str(env_dir / "bin" / "python"), "-m", "pytest", *suite.tests, f"--stack-config={server.url}",
           *EMBEDDING, f"--text-model={TEXT_MODEL}", *suite.extra_args, "-p", "no:cacheprovider",
           f"--junitxml={junit}", "-rfEs", "-q", f"--basetemp={build / suite.tag / 'tmp'}", "-p", "timeouts"]
    if select:
        cmd += ["-k", select]
    log = build / suite.tag / "pytest.log"
    print(f"[{suite.tag}] running: {' '.join(cmd[1:])}\n[{suite.tag}] log: {log}", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent)  # conformance/timeouts.py, the one plugin added
    env["LLAMA_STACK_TEST_INFERENCE_MODE"] = "live"
    with open(log, "w") as out:
        try:
            subprocess.run(cmd, cwd=dest, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"[{suite.tag}] timed out after {timeout} s", flush=True)
    if not junit.is_file():
        print(f"[{suite.tag}] pytest wrote no report; see {log}", flush=True)
        return Counts(errors=1, failures=[f"the {suite.tag} harness did not run (see {log})"])
    return read_junit(junit)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


def serve_docs(folder: Path) -> str:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", required=True, type=Path, help="a clone of the llama-stack repository (with tags)")
    parser.add_argument("--build", type=Path, default=Path.home() / ".cache" / "stackrag" / "conformance")
    parser.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated, of {', '.join(SUITES)}")
    parser.add_argument("--milvus", choices=["inline", "remote"], default="inline",
                        help="Milvus Lite in the server (inline) or a Milvus server process (remote)")
    parser.add_argument("-k", dest="keyword", help="pytest -k, to run fewer tests")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per suite")
    args = parser.parse_args()
    # A stopped run stops its server too (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    src = args.src.resolve()
    if not (src / "HEAD").is_file() and not (src / ".git").exists():
        sys.exit(f"LLAMA_STACK_SRC={src} is not a git clone (see docs/conformance.md)")
    suites = [SUITES[name] for name in args.suites.split(",")]
    for suite in suites:
        if subprocess.run(["git", "-C", str(src), "rev-parse", "--verify", "-q", f"{suite.tag}^{{commit}}"],
                          capture_output=True).returncode:
            sys.exit(f"{src} has no tag {suite.tag}: fetch the tags (git fetch --tags)")
    build = args.build.resolve()
    run_dir = build / f"server-{time.strftime('%Y%m%d-%H%M%S')}"
    docs_url = serve_docs(SHARED / "corpus" / "torchtune")
    results: dict[str, Counts] = {}
    with lite_server(run_dir / "milvus") if args.milvus == "remote" else contextlib.nullcontext() as uri:
        vector_io = ("  - provider_id: milvus\n    provider_type: inline::milvus\n    config: {db_path: milvus.db}\n"
                     if uri is None else
                     f"  - provider_id: milvus\n    provider_type: remote::milvus\n"
                     f"    config: {{uri: '{uri}', token: 'root:Milvus'}}\n")
        server = Server(run_dir, vector_io)
        print(f"stackrag at {server.url} (Milvus {args.milvus}); server log {server.log}", flush=True)
        try:
            for suite in suites:
                results[suite.tag] = run_suite(suite, src, build, server, docs_url, args.keyword, args.timeout)
        finally:
            server.stop()
    for tag, counts in results.items():
        print(f"\n== Llama Stack {tag} (Milvus {args.milvus}): {counts.line()}")
        for name in counts.failures:
            print(f"   failed: {name}")
        for reason, names in counts.skips.items():
            print(f"   skipped {len(names)}: {reason[:160]}")
    total = Counts(*(sum(getattr(c, k) for c in results.values())
                     for k in ("passed", "failed", "skipped", "xfailed", "errors")))
    print(f"\nconformance: {total.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
