"""The local chat model in a supervised process of its own, on a llama.cpp built for every CPU.

What a user on another machine needs to hold: the installed library has no instruction beyond what
each CPU variant names (nothing tuned to the machine that built it), the variant chosen is one this
machine proves it runs, and a model process that dies (kill -9, a trapped instruction, a file that
does not load) takes nothing else down: the knowledge base keeps answering, a stream in flight ends
with its error event, and the model comes back.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import EXAMPLE_CONFIG, inline_vector_io, start_server, worker_pids
from stackrag.providers.inference import cpu_variants
from stackrag.providers.inference.llama_worker import TRAP_ENV, installed_variants, variant_dir

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def llm_health(http: httpx.Client) -> dict:
    providers = http.get("/v1/providers").json()["data"]
    return next(p for p in providers if p["provider_type"] == "inline::llama-cpp")["health"]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_health(http: httpx.Client, words: str, timeout: float = 120) -> dict:
    """The chat model provider's health, once its message holds `words`."""
    def check() -> dict | None:
        health = llm_health(http)
        return health if words in health["message"] else None

    return wait_for(check, timeout, f"the model to be {words!r}")


def stream_chat(http: httpx.Client, content: str, max_tokens: int) -> list[dict]:
    events = []
    with http.stream("POST", "/v1/inference/chat-completion", json={
            "model_id": MODEL, "stream": True, "sampling_params": {"max_tokens": max_tokens},
            "messages": [{"role": "user", "content": content}]}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


@pytest.fixture(scope="module")
def model_server(tmp_path_factory, models_dir):
    server = start_server(tmp_path_factory.mktemp("model-process"), EXAMPLE_CONFIG,
                          env={"STACKRAG_MODELS_DIR": str(models_dir)})
    yield server
    server.stop()


def _objdump(path: Path) -> str:
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(cpu_variants.machine_arch() != "x86_64" or shutil.which("objdump") is None,
                    reason="instruction check written for x86_64 with binutils")
def test_the_build_holds_no_instruction_beyond_each_variant():
    """Native flags were off: the core libraries are baseline x86-64 (no AVX at all), and a variant
    holds only the registers of its own instruction set."""
    variants = installed_variants()
    assert {"x64", "haswell", "skylakex", "sapphirerapids"} <= set(variants), variants
    lib = variant_dir()
    for core in ("libggml-base.so", "libggml.so", "libllama.so"):
        code = _objdump(lib / core)
        assert "%ymm" not in code and "%zmm" not in code, f"{core} was compiled for a newer CPU than x86-64"
    haswell = _objdump(lib / "libggml-cpu-haswell.so")
    assert "%ymm" in haswell and "%zmm" not in haswell and "%tmm" not in haswell
    x64 = _objdump(lib / "libggml-cpu-x64.so")
    assert "%ymm" not in x64 and "%zmm" not in x64


def test_the_variant_chosen_is_one_this_cpu_runs():
    cpu = cpu_variants.probe()
    assert cpu.usable <= cpu.reported
    ranked = cpu_variants.ranked_variants(cpu, installed_variants())
    assert ranked, "no variant fits"
    needs = cpu_variants.variants_for(cpu.arch)[ranked[0]]
    assert set(needs) <= cpu.usable
    # Every feature the best variant leaves out is either missing here or beaten by a better fit.
    assert ranked[-1] in ("x64", "armv8.0_1")


def test_doctor_loads_the_model_and_names_its_variant(tmp_path, models_dir):
    done = subprocess.run([sys.executable, "-m", "stackrag.cli", "doctor", "--llm", "--config", str(EXAMPLE_CONFIG),
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "STACKRAG_MODELS_DIR": str(models_dir)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ llama.cpp: x86_64: the chat model runs CPU variant" in done.stdout or "aarch64" in done.stdout
    line = next(x for x in done.stdout.splitlines() if x.startswith("✓ chat model"))
    assert "answered" in line and "in its own process (CPU variant" in line


def test_a_killed_model_ends_its_stream_and_nothing_else(model_server):
    http = model_server.client()
    http.post("/v1/vector-dbs", json={"vector_db_id": "kb", "embedding_model": "all-MiniLM-L6-v2"}).raise_for_status()
    http.post("/v1/vector-io/insert", json={"vector_db_id": "kb", "chunks": [
        {"content": "The knowledge base keeps answering while the model restarts.", "metadata": {"document_id": "d"}}]}
    ).raise_for_status()
    wait_for_health(http, "process up")
    [pid] = worker_pids(model_server.process.pid)

    failures, queries, stop = [], [0], threading.Event()

    def query_every_100ms() -> None:
        with model_server.client() as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    r = client.post("/v1/vector-io/query", json={"vector_db_id": "kb", "query": "knowledge base"},
                                    timeout=5)
                    if r.status_code != 200 or not r.json()["chunks"]:
                        failures.append(r.status_code)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                queries[0] += 1
                stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))

    querier = threading.Thread(target=query_every_100ms)
    querier.start()
    events: list[dict] = []
    try:
        with http.stream("POST", "/v1/inference/chat-completion", json={
                "model_id": MODEL, "stream": True, "sampling_params": {"max_tokens": 600},
                "messages": [{"role": "user", "content": "Tell a very long story about the sea."}]}) as response:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(json.loads(line[6:]))
                if len(events) == 5:
                    os.kill(pid, signal.SIGKILL)
        saw_restarting = "restarting" in llm_health(http)["message"] or "starting" in llm_health(http)["message"]
        # The next request waits for the restart and is answered.
        answer = stream_chat(http, "Say hello.", 8)
    finally:
        stop.set()
        querier.join()
    assert len(events) > 5 and "error" in events[-1], events[-3:]
    error = events[-1]["error"]
    assert error["status_code"] == 503 and "restarting" in error["message"] and "127.0.0.1" not in error["message"]
    assert saw_restarting
    assert answer[-1]["event"]["event_type"] == "complete", answer[-1]
    assert "process up" in llm_health(http)["message"] and "restarts 1" in llm_health(http)["message"]
    assert worker_pids(model_server.process.pid) != [pid]
    assert queries[0] >= 10 and failures == [], (queries, failures)


def test_a_model_file_that_does_not_load(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    config = tmp_path / "run.yaml"
    config.write_text(
        "providers:\n  inference:\n  - provider_id: llama-cpp\n    provider_type: inline::llama-cpp\n"
        f"    config: {{model_path: '{bad}'}}\n  vector_io:\n" + inline_vector_io()
        + "models:\n- model_id: broken\n  provider_id: llama-cpp\n  provider_model_id: broken.gguf\n"
    )
    server = start_server(tmp_path / "data", config)
    try:
        http = server.client()
        health = wait_for_health(http, "failed", 60)
        assert health["status"] == "Error" and "could not load" in health["message"], health
        r = http.post("/v1/inference/chat-completion", json={"model_id": "broken", "messages": [
            {"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and "cannot run" in r.json()["detail"], r.text
        # Retrieval is untouched.
        http.post("/v1/vector-dbs", json={"vector_db_id": "kb", "embedding_model": "all-MiniLM-L6-v2"}).raise_for_status()
        http.post("/v1/vector-io/insert", json={"vector_db_id": "kb", "chunks": [
            {"content": "still serving", "metadata": {"document_id": "d"}}]}).raise_for_status()
        assert http.post("/v1/vector-io/query", json={"vector_db_id": "kb", "query": "serving"}).json()["chunks"]
    finally:
        server.stop()
    done = subprocess.run([sys.executable, "-m", "stackrag.cli", "doctor", "--llm", "--config", str(config),
                           "--data-dir", str(tmp_path / "doctor")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert any(x.startswith("✗ chat model broken") and "could not load" in x for x in done.stdout.splitlines()), \
        done.stdout


def test_a_variant_that_traps_is_replaced_by_the_next(tmp_path, models_dir):
    """As on a VM that reports a feature and traps it: the first variant's process dies of SIGILL
    (the worker's test hook raises the real signal), and the next best variant serves."""
    ranked = cpu_variants.ranked_variants(cpu_variants.probe(), installed_variants())
    if len(ranked) < 2:
        pytest.skip("only one CPU variant fits this machine")
    cache = tmp_path / "cache"  # no memory of earlier faults: the first variant is tried
    server = start_server(tmp_path / "data", EXAMPLE_CONFIG, env={
        "STACKRAG_MODELS_DIR": str(models_dir), TRAP_ENV: ranked[0], "XDG_CACHE_HOME": str(cache)})
    try:
        http = server.client()
        health = wait_for_health(http, "process up")
        assert f"CPU variant {ranked[1]}" in health["message"], health
        assert stream_chat(http, "Say hello.", 8)[-1]["event"]["event_type"] == "complete"
        assert f"died of SIGILL on CPU variant {ranked[0]}" in server.log_tail(200)
    finally:
        server.stop()
    # Remembered for this CPU: the next start goes straight to the variant that works.
    faults = json.loads((cache / "stackrag" / "cpu-variant-faults.json").read_text())
    assert list(faults.values()) == [[ranked[0]]]


def _deny_amx() -> None:
    """A seccomp filter that refuses arch_prctl(ARCH_REQ_XCOMP_PERM): the kernel will not grant AMX."""
    libc = ctypes.CDLL(None, use_errno=True)

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    ld, jeq, ret = 0x20, 0x15, 0x06
    rules = (Filter * 6)(
        Filter(ld, 0, 0, 0),  # syscall number
        Filter(jeq, 0, 3, 158),  # arch_prctl?
        Filter(ld, 0, 0, 16),  # its first argument
        Filter(jeq, 0, 1, 0x1023),  # ARCH_REQ_XCOMP_PERM?
        Filter(ret, 0, 0, 0x00050000 | 1),  # EPERM
        Filter(ret, 0, 0, 0x7FFF0000),  # allow
    )
    program = Program(6, rules)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(program), 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


@pytest.mark.skipif("AMX_INT8" not in cpu_variants.probe().usable, reason="this CPU has no usable AMX")
def test_amx_is_used_only_where_the_kernel_grants_it(tmp_path, models_dir):
    """Under a filter that refuses the AMX permission, the probe refuses AMX and a variant without it serves."""
    env = {**os.environ, "STACKRAG_ALLOW_PRIVATE_URLS": "1", "STACKRAG_MODELS_DIR": str(models_dir)}
    port_log = tmp_path / "server.log"
    from milvus_servers import free_port

    port = free_port()
    with open(port_log, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "stackrag.cli", "run", "--port", str(port), "--data-dir",
                                    str(tmp_path), "--config", str(EXAMPLE_CONFIG)], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, preexec_fn=_deny_amx)
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        wait_for(lambda: _healthy(http), 90, "the server")
        health = wait_for_health(http, "process up")
        assert "sapphirerapids" not in health["message"], health
        assert stream_chat(http, "Say hello.", 8)[-1]["event"]["event_type"] == "complete"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/v1/health").status_code == 200
    except httpx.HTTPError:
        return False
