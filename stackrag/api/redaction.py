"""Secrets in provider configs (tokens, keys, passwords) never leave the server."""

from __future__ import annotations

from typing import Any

SECRET_WORDS = ("token", "key", "password", "secret", "credential")


def redact(config: Any) -> Any:
    if isinstance(config, dict):
        return {
            k: ("********" if v and any(w in k.lower() for w in SECRET_WORDS) else redact(v))
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [redact(v) for v in config]
    return config
