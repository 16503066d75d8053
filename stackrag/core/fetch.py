"""Fetching a document URL on a user's behalf, bounded in time, size and redirects.

The private-address check happens when the socket is opened, on the address actually dialled:
a name that resolves to 127.0.0.1, a redirect to a private host, or a DNS answer that changes
between a check and the connect (rebinding) all meet the same guard.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

from ..config import FetchSettings
from ..errors import BadRequest, PayloadTooLarge

# Ranges `ipaddress` does not flag as private but that no user document should come from.
EXTRA_BLOCKED = [ipaddress.ip_network(n) for n in ("100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15")]
ALLOW_HINT = "set fetch.allow_private_urls: true in the config or STACKRAG_ALLOW_PRIVATE_URLS=1 to allow it"


class PrivateAddressError(Exception):
    pass


@dataclass
class Fetched:
    content: bytes
    content_type: str | None
    charset: str | None
    final_url: str


def is_blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in net for net in EXTRA_BLOCKED if net.version == ip.version)
    )


def check_address(address: str, allow_private: bool) -> None:
    if allow_private:
        return
    if is_blocked(ipaddress.ip_address(address.split("%")[0])):
        raise PrivateAddressError(f"the address {address} is private, loopback or link-local; {ALLOW_HINT}")


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host itself, refuses private targets, and dials the checked address."""

    def __init__(self, allow_private: bool):
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve host {host!r}") from exc
        addresses = [info[4][0] for info in infos]
        for address in addresses:
            check_address(address, self._allow_private)
        return await self._inner.connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise PrivateAddressError("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, allow_private: bool):
        super().__init__(trust_env=False)
        # httpx exposes no network_backend option; its pool is rebuilt with ours (same TLS context).
        ssl_context = self._pool._ssl_context
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=10, network_backend=GuardedBackend(allow_private)
        )


def display_url(url: str) -> str:
    """The URL without user:password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


async def fetch_url(url: str, settings: FetchSettings) -> Fetched:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise BadRequest(f"cannot fetch {scheme or 'scheme-less'} URLs; use http(s) or a data: URL")
    try:
        return await asyncio.wait_for(_fetch(url, settings), timeout=settings.timeout_seconds)
    except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
        raise BadRequest(f"fetching {display_url(url)} took longer than {settings.timeout_seconds:g} s") from exc


async def _fetch(url: str, settings: FetchSettings) -> Fetched:
    timeout = httpx.Timeout(settings.timeout_seconds)
    transport = GuardedTransport(settings.allow_private_urls)
    async with httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False,
                                 trust_env=False) as client:
        current = url
        for _ in range(settings.max_redirects + 1):
            try:
                async with client.stream("GET", current) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        current = str(response.url.join(location))
                        if urlsplit(current).scheme not in ("http", "https"):
                            raise BadRequest(f"{display_url(url)} redirects to a non-http URL")
                        continue
                    if response.status_code >= 400:
                        raise BadRequest(f"fetching {display_url(current)} failed: HTTP {response.status_code}")
                    content = await _read_capped(response, settings.max_bytes, current)
                    return Fetched(content, _media_type(response), response.charset_encoding, str(response.url))
            except PrivateAddressError as exc:
                raise BadRequest(f"refused to fetch {display_url(current)}: {exc}") from exc
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError as exc:
                cause = exc.__cause__ if isinstance(exc.__cause__, PrivateAddressError) else None
                if cause is not None:
                    raise BadRequest(f"refused to fetch {display_url(current)}: {cause}") from exc
                raise BadRequest(f"fetching {display_url(current)} failed: {type(exc).__name__}: {exc}") from exc
        raise BadRequest(f"fetching {display_url(url)}: too many redirects (more than {settings.max_redirects})")


async def _read_capped(response: httpx.Response, max_bytes: int, url: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"{display_url(url)} is {declared} bytes; the limit is {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    # Decoded bytes are counted, so a small compressed body cannot expand past the cap.
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"{display_url(url)} is larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(response: httpx.Response) -> str | None:
    value = response.headers.get("content-type")
    return value.split(";")[0].strip().lower() if value else None
