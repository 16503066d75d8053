"""API keys kept in the registry (SQLite or PostgreSQL): made, listed and revoked with `stackrag keys`,
checked by the server on every request.

A key is read-only or read-write, and either unscoped or limited to a set of vector DBs / vector
stores (services/tenancy.py). Only its sha256 digest is stored; the secret is shown once, when it is
made. The server re-reads the keys every REFRESH_SECONDS, so a revoked key stops working without a
restart, on every replica. Keys from the run config or the environment (server.api_keys,
STACKRAG_API_KEY) are unscoped and live beside these.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..config import ApiKey
from ..errors import BadRequest, NotFound
from ..storage.registry import Registry
from .tenancy import Tenant

NAMESPACE = "api_keys"
REFRESH_SECONDS = 2.0
ACCESS = ("read_write", "read_only")


@dataclass(frozen=True)
class Key:
    access: str
    # None: every vector DB; else the vector DBs / vector stores it may see (and the ones it creates).
    tenant: Tenant | None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def config_keys(keys: list[ApiKey]) -> dict[str, str]:
    """digest -> access of the run config's (and the environment's) keys. A dict lookup on digests
    compares no secret byte by byte, so timing tells nothing useful."""
    return {digest(k.key.get_secret_value()): k.access for k in keys if k.key is not None}


class KeyService:
    def __init__(self, registry: Registry, config_keys: dict[str, str] | None = None):
        self._registry = registry
        # digest -> access of the keys the run config or environment gives (unscoped)
        self._config = dict(config_keys or {})
        self._stored: dict[str, Key] = {}
        self._read_at = 0.0
        self._lock = threading.Lock()

    # -- the CLI's side ------------------------------------------------------------------------

    def create(self, access: str, vector_dbs: list[str] | None, name: str | None = None) -> tuple[dict, str]:
        """A new key: (its record, the secret, shown only now)."""
        if access not in ACCESS:
            raise BadRequest(f"access must be one of {', '.join(ACCESS)}")
        secret = "sk-stackrag-" + secrets.token_urlsafe(32)
        key_id = f"key_{uuid.uuid4().hex[:12]}"
        record = {"id": key_id, "name": name or key_id, "digest": digest(secret), "access": access,
                  "vector_dbs": sorted(set(vector_dbs)) if vector_dbs is not None else None,
                  "created_at": int(time.time()), "revoked_at": None}
        self._registry.put(NAMESPACE, key_id, record)
        return public(record), secret

    def list(self) -> list[dict[str, Any]]:
        return [public(r) for r in self._registry.list(NAMESPACE)]

    def revoke(self, key_id: str) -> dict[str, Any]:
        record = self._registry.get(NAMESPACE, key_id)
        if record is None:
            raise NotFound(f"API key {key_id!r} not found; `stackrag keys list` shows them")
        record["revoked_at"] = record.get("revoked_at") or int(time.time())
        self._registry.put(NAMESPACE, key_id, record)
        return public(record)

    def grant(self, key_id: str, vector_db_id: str) -> None:
        """A scoped key sees what it creates: the new vector DB joins its scope."""
        with self._registry.locked([f"{NAMESPACE}/{key_id}"]):
            record = self._registry.get(NAMESPACE, key_id)
            if record is None or record.get("vector_dbs") is None:
                return
            record["vector_dbs"] = sorted({*record["vector_dbs"], vector_db_id})
            self._registry.put(NAMESPACE, key_id, record)
        self._read_at = 0.0

    # -- the server's side ---------------------------------------------------------------------

    def active(self) -> bool:
        """Whether any key exists: without one, authentication is off."""
        self._refresh()
        return bool(self._config or self._stored)

    def resolve(self, secret: str) -> Key | None:
        token = digest(secret)
        access = self._config.get(token)
        if access is not None:
            return Key(access, None)
        self._refresh()
        return self._stored.get(token)

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at < REFRESH_SECONDS:
            return
        with self._lock:
            if time.monotonic() - self._read_at < REFRESH_SECONDS:
                return
            stored = {}
            for record in self._registry.list(NAMESPACE):
                if record.get("revoked_at"):
                    continue
                scope = record.get("vector_dbs")
                tenant = Tenant(record["id"], frozenset(scope)) if scope is not None else None
                stored[record["digest"]] = Key(record["access"], tenant)
            self._stored = stored
            self._read_at = time.monotonic()


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "digest"}
