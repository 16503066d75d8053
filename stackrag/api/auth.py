"""API keys: `Authorization: Bearer <key>` on every route but /v1/health and the playground page,
read-only or read-write.

This middleware authenticates (401) and records the key's access and scope in the request's state;
what a read-only key may do is decided per operation once the route is known (access.py), what a
scoped key may see by the services (services/tenancy.py). Keys come from the run config and the
environment, and from the registry (`stackrag keys`: services/keys.py); without any key at all
authentication is off. Keys are kept as sha256 digests and never logged or echoed.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from starlette.types import ASGIApp, Receive, Scope, Send

from ..services.keys import KeyService
from .errors import error_response

log = logging.getLogger(__name__)

# The playground's page and assets hold no data (its API calls carry the key), so a browser can load
# it and then ask the user for a key.
OPEN_PATHS = frozenset({"/v1/health", "/"})
OPEN_PREFIXES = ("/playground/",)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


class ApiKeyAuth:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        keys: KeyService = scope["app"].state.stack.keys
        if not keys.active():
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token is None:
            await _refuse(scope, receive, send, 401, "this server needs an API key: send the header "
                          "`Authorization: Bearer <key>` (api_key= in the llama-stack and openai clients)")
            return
        key = keys.resolve(token)
        if key is None:
            await _refuse(scope, receive, send, 401, "the API key is not valid for this server")
            return
        state = scope.setdefault("state", {})
        state["key_access"], state["tenant"] = key.access, key.tenant
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    response = error_response(message, status, {"WWW-Authenticate": "Bearer"} if status == 401 else None)
    await response(scope, receive, send)
