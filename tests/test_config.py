"""The run config: Llama Stack's run.yaml shape, ${env.NAME:=default}, the tutorial's Milvus blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackrag.config import ConfigError, load_config, substitute_env

# The tutorial's together run.yaml, trimmed to its shape: providers we do not serve are accepted.
TUTORIAL_RUN_YAML = """
version: '2'
image_name: together
apis: [agents, datasetio, eval, inference, safety, scoring, telemetry, tool_runtime, vector_io]
providers:
  inference:
  - provider_id: together
    provider_type: remote::together
    config:
      url: https://api.together.xyz/v1
      api_key: ${env.TOGETHER_API_KEY:=}
  - provider_id: sentence-transformers
    provider_type: inline::sentence-transformers
    config: {}
  vector_io:
  - provider_id: milvus
    provider_type: inline::milvus
    config:
      db_path: ${env.MILVUS_DB:=~/.llama/distributions/together/milvus_store.db}
#  - provider_id: milvus
#    provider_type: remote::milvus
#    config:
#      uri: http://localhost:19530
#      token: root:Milvus
  safety:
  - provider_id: llama-guard
    provider_type: inline::llama-guard
    config: {}
  telemetry:
  - provider_id: meta-reference
    provider_type: inline::meta-reference
    config: {service_name: "${env.OTEL_SERVICE_NAME:=llama-stack}"}
metadata_store:
  type: sqlite
  db_path: ${env.SQLITE_STORE_DIR:=~/.llama/distributions/together}/registry.db
models:
- metadata: {}
  model_id: meta-llama/Llama-3.3-70B-Instruct-Turbo
  provider_id: together
  model_type: llm
- metadata: {embedding_dimension: 384}
  model_id: all-MiniLM-L6-v2
  provider_id: sentence-transformers
  model_type: embedding
shields: []
vector_dbs: []
tool_groups:
- toolgroup_id: builtin::rag
  provider_id: rag-runtime
server:
  port: 8321
"""


def test_tutorial_config_loads_as_written(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text(TUTORIAL_RUN_YAML)
    cfg = load_config(path, env={"SQLITE_STORE_DIR": str(tmp_path)})
    milvus = cfg.providers["vector_io"][0]
    assert (milvus.provider_id, milvus.provider_type) == ("milvus", "inline::milvus")
    assert milvus.config["db_path"] == "~/.llama/distributions/together/milvus_store.db"
    assert cfg.metadata_store.db_path == f"{tmp_path}/registry.db"
    assert cfg.providers["inference"][0].config["api_key"] is None
    assert cfg.server.port == 8321
    assert [m.model_id for m in cfg.models] == [
        "meta-llama/Llama-3.3-70B-Instruct-Turbo", "all-MiniLM-L6-v2", "qwen2.5-coder-0.5b-instruct"
    ]
    # The offline chat provider is added beside the hosted one; the file's own entries stay first.
    assert [p.provider_type for p in cfg.providers["inference"]] == [
        "remote::together", "inline::sentence-transformers", "inline::llama-cpp"
    ]


def test_remote_milvus_block(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "providers:\n  vector_io:\n  - provider_id: milvus\n    provider_type: remote::milvus\n"
        "    config:\n      uri: ${env.MILVUS_URI:=http://localhost:19530}\n      token: root:Milvus\n"
        "      consistency_level: Bounded\n      secure: false\n"
    )
    cfg = load_config(path, env={"MILVUS_URI": "http://10.1.2.3:19530"})
    milvus = cfg.providers["vector_io"][0]
    assert milvus.config == {"uri": "http://10.1.2.3:19530", "token": "root:Milvus",
                             "consistency_level": "Bounded", "secure": False}
    # The defaults fill what the file leaves out: the offline inference providers and their models.
    assert {p.provider_type for p in cfg.providers["inference"]} == {"inline::sentence-transformers",
                                                                     "inline::llama-cpp"}
    assert sorted(m.model_id for m in cfg.models) == ["all-MiniLM-L6-v2", "qwen2.5-coder-0.5b-instruct"]


def test_env_substitution_forms():
    env = {"SET": "value", "EMPTY": ""}
    assert substitute_env("${env.SET}", env) == "value"
    assert substitute_env("${env.MISSING:=fallback}", env) == "fallback"
    assert substitute_env("${env.EMPTY:=fallback}", env) == "fallback"
    assert substitute_env("${env.SET:+on}", env) == "on"
    assert substitute_env("${env.MISSING:+on}", env) is None
    assert substitute_env("prefix-${env.SET}-suffix", env) == "prefix-value-suffix"
    assert substitute_env({"a": ["${env.SET}", 3]}, env) == {"a": ["value", 3]}
    with pytest.raises(ConfigError, match="MISSING is not set"):
        substitute_env("${env.MISSING}", env)


def test_bad_config_files_say_what_is_wrong(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("providers:\n  vector_io:\n  - provider_type: inline::milvus\n")
    with pytest.raises(ConfigError, match="provider_id"):
        load_config(wrong)
    rewrite = tmp_path / "rewrite.yaml"
    rewrite.write_text("retrieval:\n  rewrite_query: {model: m, prompt: 'no placeholder'}\n")
    with pytest.raises(ConfigError, match="must contain {query}"):
        load_config(rewrite)


def test_no_file_means_embedded_defaults():
    cfg = load_config(None)
    assert [(p.provider_id, p.provider_type) for p in cfg.providers["vector_io"]] == [("milvus", "inline::milvus")]
    models = {m.model_id: m for m in cfg.models}
    assert models["all-MiniLM-L6-v2"].metadata == {"embedding_dimension": 384}
    assert models["all-MiniLM-L6-v2"].model_type == "embedding"
    assert models["qwen2.5-coder-0.5b-instruct"].model_type == "llm"
    assert cfg.server.port == 8321


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[1] / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_example_loads(example):
    """The configs the README points to are valid as shipped, with no environment set."""
    config = load_config(example, env={})
    assert config.providers["vector_io"] and config.providers["inference"]
    assert any(m.model_type == "llm" for m in config.models)


def test_postgres_metadata_store_for_replicas(tmp_path: Path):
    """Llama Stack's postgres block, secrets from the environment; --workers accepts it with remote Milvus."""
    from stackrag.api.workers import check_workers

    path = tmp_path / "run.yaml"
    path.write_text(
        "providers:\n  vector_io:\n  - provider_id: milvus\n    provider_type: remote::milvus\n"
        "    config: {uri: 'http://milvus:19530'}\n"
        "metadata_store:\n  type: postgres\n  host: ${env.POSTGRES_HOST:=localhost}\n"
        "  port: ${env.POSTGRES_PORT:=5432}\n  db: stackrag\n  user: stackrag\n"
        "  password: ${env.POSTGRES_PASSWORD}\n  table_name: llamastack_kvstore\n"
        "jobs: {lease_seconds: 10}\n"
    )
    cfg = load_config(path, env={"POSTGRES_HOST": "pg.internal", "POSTGRES_PORT": "6543", "POSTGRES_PASSWORD": "s3"})
    store = cfg.metadata_store
    assert (store.type, store.host, store.port) == ("postgres", "pg.internal", 6543)
    assert store.password.get_secret_value() == "s3"
    assert "s3" not in repr(store)
    assert cfg.files.type is None and cfg.jobs.lease_seconds == 10 and cfg.jobs.concurrency == 2
    check_workers(cfg, 4)
    with pytest.raises(ConfigError, match="inline::milvus"):
        check_workers(load_config(None), 2)
    check_workers(load_config(None), 1)


def test_the_readme_config_reference_loads(tmp_path: Path):
    """The README's annotated run.yaml is the config reference: it must stay a valid config."""
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", readme[readme.index("## Configuration"):], re.S)
    (tmp_path / "run.yaml").write_text(block[1])
    config = load_config(tmp_path / "run.yaml", env={})
    assert config.providers["vector_io"][0].provider_type == "inline::milvus"
    assert config.metadata_store.type == "sqlite" and config.jobs.lease_seconds == 30
