"""Keys scoped to knowledge bases: who is asking, and what they may see.

A scoped API key (services/keys.py) sees only its own vector DBs and vector stores, and only what it
made itself among files, agents, responses and conversations. The request's tenant is set once per
request (api/access.py); the services that hold such records consult it here, so every route, tool,
agent and search inherits the same rule. Something another tenant owns is answered exactly like
something that does not exist (404): the existence of other tenants' ids never leaks.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

OWNER = "owner_key"


@dataclass(frozen=True)
class Tenant:
    key_id: str
    vector_dbs: frozenset[str]


_current: ContextVar[Tenant | None] = ContextVar("stackrag_tenant", default=None)


def current() -> Tenant | None:
    """The scoped key of the request under way; None for an unscoped key, no key, or background work."""
    return _current.get()


def enter(tenant: Tenant | None) -> Any:
    return _current.set(tenant)


def leave(token: Any) -> None:
    _current.reset(token)


def extend(vector_db_id: str) -> None:
    """The vector DB a scoped key just created joins what it sees, for the rest of this request too."""
    tenant = current()
    if tenant is not None:
        _current.set(Tenant(tenant.key_id, tenant.vector_dbs | {vector_db_id}))


def sees_vector_db(vector_db_id: str) -> bool:
    tenant = current()
    return tenant is None or vector_db_id in tenant.vector_dbs


def stamp(record: dict[str, Any]) -> dict[str, Any]:
    """A record made by a scoped key belongs to it."""
    tenant = current()
    return {**record, OWNER: tenant.key_id} if tenant is not None else record


def sees(record: dict[str, Any] | None) -> bool:
    """Whether the current key may see a record: an unscoped one sees all; a scoped one, its own."""
    if record is None:
        return False
    tenant = current()
    return tenant is None or record.get(OWNER) == tenant.key_id


def own(record: dict[str, Any] | None, missing: str) -> dict[str, Any]:
    """The record as the API shows it, if the caller may see it; NotFound(missing) if it is absent or
    another key's (the two answers are the same)."""
    if not sees(record):
        from ..errors import NotFound

        raise NotFound(missing)
    assert record is not None
    return without_owner(record)


def without_owner(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the API shows it: the owner is the server's business."""
    return {k: v for k, v in record.items() if k != OWNER}
