"""What a request may do, declared once: every operation is a read or a write.

A route says so in its OpenAPI operation (`x-stackrag-access`: "read", "write" or "tool"). A route
that says nothing is a read only if it is a GET: a new POST or DELETE is a write until declared
otherwise. "tool" (tool-runtime/invoke) leaves it to the tool invoked, by its own declaration in
services/toolgroups.py. A read-only key is refused (403) every write, whatever the route is named;
tests/test_auth.py derives its read/write matrix from these declarations and the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ..errors import Forbidden
from ..services import tenancy

ACCESS_KEY = "x-stackrag-access"
READ: dict[str, Any] = {ACCESS_KEY: "read"}
WRITE: dict[str, Any] = {ACCESS_KEY: "write"}
BY_TOOL: dict[str, Any] = {ACCESS_KEY: "tool"}
READ_ONLY = "read_only"


def declared(method: str, openapi_extra: dict[str, Any] | None) -> str:
    """read | write | tool, for an operation."""
    value = (openapi_extra or {}).get(ACCESS_KEY)
    if value in ("read", "write", "tool"):
        return value
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "write"


def key_access(request: Request) -> str | None:
    """read_write | read_only for the caller's key; None when authentication is off."""
    return request.scope.get("state", {}).get("key_access")


def _refuse(request: Request, what: str) -> Forbidden:
    return Forbidden(f"this API key is read-only: {what} changes stored data and needs a read-write key")


async def enforce(request: Request) -> None:
    """An app-wide dependency: runs once the route is known, before its body is read. It also makes
    the key's scope (if any) the tenant of everything the request does (services/tenancy.py)."""
    tenancy.enter(request.scope.get("state", {}).get("tenant"))
    if key_access(request) != READ_ONLY:
        return
    route = request.scope.get("route")
    if declared(request.method, getattr(route, "openapi_extra", None)) == "write":
        raise _refuse(request, f"{request.method} {request.url.path}")


def require_write(request: Request, what: str) -> None:
    """For operations whose effect depends on the body (a tool that inserts)."""
    if key_access(request) == READ_ONLY:
        raise _refuse(request, what)
