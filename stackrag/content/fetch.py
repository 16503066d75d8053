"""Fetching a document URL on a user's behalf, bounded in time, size and redirects.

The private-address check happens when the socket is opened, on the address actually dialled:
a name that resolves to 127.0.0.1, a redirect to a private host, or a DNS answer that changes
between a check and the connect (rebinding) all meet the same guard, because the checked address
is the one connected to (TLS still verifies the certificate against the URL's host name).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import socket
import ssl
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpcore
import httpx

from ..config import FetchSettings
from ..errors import BadRequest, PayloadTooLarge

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges `ipaddress` does not flag as private in every Python version, but that no user document
# should come from: carrier-grade NAT, IETF protocol assignments, benchmarking, local-use NAT64.
EXTRA_BLOCKED = [
    ipaddress.ip_network(n)
    for n in ("100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "64:ff9b:1::/48")
]
# Well-known NAT64 prefix: the last 32 bits are an IPv4 address the gateway will dial for us.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Cloud instance-metadata services hand out credentials; no document lives there, so they stay refused
# even when private URLs are allowed (AWS/GCP/Azure/OpenStack, AWS IPv6, AWS ECS tasks, Alibaba).
METADATA_ADDRESSES = {ipaddress.ip_address(a) for a in
                      ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")}
ALLOW_HINT = "set fetch.allow_private_urls: true in the config or STACKRAG_ALLOW_PRIVATE_URLS=1 to allow it"
USER_AGENT = "stackrag (document fetch)"


class PrivateAddressError(Exception):
    """Raised inside the connection pool; it passes through httpcore and httpx unchanged."""


@dataclass
class Fetched:
    content: bytes
    content_type: str | None  # the media type without parameters, lower case
    charset: str | None
    final_url: str


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_blocked(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:a.b.c.d is a.b.c.d on the wire; 6to4 and NAT64 reach a.b.c.d through a gateway.
        if ip.ipv4_mapped is not None:
            return is_blocked(ip.ipv4_mapped)
        inner = embedded_ipv4(ip)
        if inner is not None and is_blocked(inner):
            return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in net for net in EXTRA_BLOCKED if net.version == ip.version)
    )


def check_address(address: str, allow_private: bool) -> None:
    """Raise PrivateAddressError for an address a fetch must not reach (private ones unless allowed)."""
    # getaddrinfo gives link-local IPv6 answers with a zone ("fe80::1%eth0").
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    inner = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if ip in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
        raise PrivateAddressError(f"the address {address} is a cloud metadata service; it is never fetched")
    if not allow_private and is_blocked(ip):
        raise PrivateAddressError(f"the address {address} is private, loopback or link-local; {ALLOW_HINT}")


async def resolve(host: str, port: int) -> list[str]:
    """The host's addresses in resolver order, without duplicates."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise httpcore.ConnectError(f"cannot resolve host {host!r} ({reason})") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host itself, refuses private targets, and dials the checked address."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port)
        # Every answer is checked, not just the one dialled: a name mixing public and private
        # answers is a rebinding setup, not an accident.
        for address in addresses:
            check_address(address, self._allow_private)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout = httpcore.ConnectError("no addresses")
        # Try each address in turn (localhost is often ::1 then 127.0.0.1, with a server on only one).
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise type(failure)(f"cannot connect to {host} port {port} ({root_cause(failure)})") from failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise PrivateAddressError("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def root_cause(exc: BaseException) -> str:
    """The most specific reason in an exception chain ("Connection refused", not "All connection
    attempts failed")."""
    reason = str(exc) or type(exc).__name__
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno:
            reason = os.strerror(current.errno)
        current = current.__cause__
    return reason


@functools.cache
def tls_context() -> ssl.SSLContext:
    # Loading the CA bundle takes milliseconds; one context serves every fetch.
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request/response mapping, error mapping) over the guarded backend."""

    def __init__(self, allow_private: bool, context: ssl.SSLContext) -> None:
        super().__init__(verify=context, trust_env=False)
        # httpx has no network_backend option, so the pool it built is replaced with one that has.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, max_connections=4, network_backend=GuardedBackend(allow_private)
        )


def display_url(url: str) -> str:
    """The URL without user:password, for messages and logs; never raises."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def redact(message: str, url: str) -> str:
    """A library message with the URL's credentials removed, should it quote them."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return message
    userinfo = netloc.rpartition("@")[0]
    if userinfo:
        message = message.replace(userinfo, "***")
        password = userinfo.partition(":")[2]
        if len(password) >= 4:
            message = message.replace(password, "***")
    return message


async def fetch_url(url: str, settings: FetchSettings) -> Fetched:
    check_url(url)
    try:
        async with asyncio.timeout(settings.timeout_seconds):
            return await _follow(url, settings)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise BadRequest(f"fetching {display_url(url)} took longer than {settings.timeout_seconds:g} s") from exc


def check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise BadRequest(f"invalid URL {display_url(url)}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"{scheme}:" if scheme else "scheme-less"
        raise BadRequest(f"cannot fetch {shown} URLs; use http(s) or a data: URL")
    if not parts.hostname:
        raise BadRequest(f"invalid URL {display_url(url)}: no host")


async def _follow(url: str, settings: FetchSettings) -> Fetched:
    timeout = httpx.Timeout(settings.timeout_seconds)
    headers = {"user-agent": USER_AGENT, "accept": "*/*", "accept-encoding": "gzip, deflate"}
    # The CA bundle loads in ~80 ms on first use: not on the event loop.
    transport = GuardedTransport(settings.allow_private_urls, await asyncio.to_thread(tls_context))
    async with httpx.AsyncClient(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False, headers=headers
    ) as client:
        current = url
        for _ in range(settings.max_redirects + 1):
            outcome = await _get(client, current, settings.max_bytes)
            if isinstance(outcome, Fetched):
                return outcome
            current = outcome
        raise BadRequest(f"fetching {display_url(url)}: too many redirects (more than {settings.max_redirects})")


async def _get(client: httpx.AsyncClient, url: str, max_bytes: int) -> Fetched | str:
    """One request: the document, or the URL a redirect points to."""
    try:
        async with client.stream("GET", url) as response:
            # has_redirect_location, not is_redirect: a 304 or a 3xx without Location is no redirect.
            if response.has_redirect_location:
                return _redirect_target(response, url)
            if not response.is_success:
                reason = f" {response.reason_phrase}" if response.reason_phrase else ""
                raise BadRequest(f"fetching {display_url(url)} failed: HTTP {response.status_code}{reason}")
            content = await _read_capped(response, max_bytes, url)
            return Fetched(content, _media_type(response), response.charset_encoding, str(response.url))
    except PrivateAddressError as exc:
        raise BadRequest(f"refused to fetch {display_url(url)}: {exc}") from exc
    except httpx.TimeoutException:
        raise
    except httpx.InvalidURL as exc:
        raise BadRequest(f"invalid URL {display_url(url)}: {redact(str(exc), url)}") from exc
    except httpx.ConnectError as exc:
        raise BadRequest(f"could not fetch {display_url(url)}: {redact(str(exc), url)}") from exc
    except httpx.HTTPError as exc:
        reason = redact(str(exc), url) or type(exc).__name__
        raise BadRequest(f"fetching {display_url(url)} failed: {reason}") from exc


def _redirect_target(response: httpx.Response, url: str) -> str:
    location = response.headers["location"]
    try:
        target = str(response.url.join(location))
    except httpx.InvalidURL as exc:
        raise BadRequest(f"{display_url(url)} redirects to an invalid URL") from exc
    if urlsplit(target).scheme not in ("http", "https"):
        raise BadRequest(f"{display_url(url)} redirects to a non-http URL ({display_url(target)})")
    return target


# Bytes one decompression step may produce: a network chunk of a compressed body is inflated in
# steps of this size, each counted against the cap, so no chunk can expand past it in one go.
INFLATE_STEP = 1024 * 1024
MAX_ENCODINGS = 4


class TooLarge(Exception):
    pass


class Inflater:
    """Undo a Content-Encoding chain (`gzip, gzip`, `deflate`, ...) in bounded steps: every layer's
    output is counted as it is produced, and the body is refused as soon as one passes the cap."""

    def __init__(self, encodings: list[str], max_bytes: int):
        self._layers = [_decompressor(e) for e in reversed(encodings)]  # the last applied comes off first
        self._sizes = [0] * len(self._layers)
        self._max = max_bytes
        self._total = 0

    @property
    def encoded(self) -> bool:
        return bool(self._layers)

    def feed(self, data: bytes, final: bool = False) -> list[bytes]:
        pieces = [data] if data else []
        for number, layer in enumerate(self._layers):
            pieces = [out for piece in pieces for out in self._inflate(number, layer, piece)]
            if final:
                pieces += self._flush(number, layer)
        self._total += sum(len(p) for p in pieces)
        if self._total > self._max:
            raise TooLarge()
        return pieces

    def _inflate(self, number: int, layer: Any, data: bytes) -> Iterator[bytes]:
        while data:
            out = layer.decompress(data, INFLATE_STEP)
            self._count(number, out)
            yield out
            data = layer.unconsumed_tail

    def _flush(self, number: int, layer: Any) -> list[bytes]:
        out = layer.flush()
        self._count(number, out)
        return [out] if out else []

    def _count(self, number: int, out: bytes) -> None:
        self._sizes[number] += len(out)
        if self._sizes[number] > self._max:
            raise TooLarge()


def _decompressor(encoding: str) -> Any:
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise BadRequest(f"the server sent Content-Encoding {encoding!r}, which stackrag does not decode "
                     "(gzip, deflate or none)")


async def _read_capped(response: httpx.Response, max_bytes: int, url: str) -> bytes:
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"{display_url(url)} is {declared} bytes; the limit is {max_bytes} bytes")
    encodings = [e.strip().lower() for e in response.headers.get("content-encoding", "").split(",")
                 if e.strip() and e.strip().lower() != "identity"]
    if len(encodings) > MAX_ENCODINGS:
        raise BadRequest(f"{display_url(url)} is encoded {len(encodings)} times over; refused")
    inflater = Inflater(encodings, max_bytes)
    chunks: list[bytes] = []
    # The raw bytes, decoded here step by step: httpx would inflate a whole network chunk at once.
    # Inflating is CPU work: on a thread when there is any, so the event loop keeps answering.
    try:
        async for raw in response.aiter_raw():
            if len(raw) > max_bytes:
                raise TooLarge()
            chunks += await asyncio.to_thread(inflater.feed, raw) if inflater.encoded else inflater.feed(raw)
        chunks += await asyncio.to_thread(inflater.feed, b"", True) if inflater.encoded else []
    except TooLarge:
        raise PayloadTooLarge(f"{display_url(url)} is larger than the limit of {max_bytes} bytes") from None
    except zlib.error as exc:
        raise BadRequest(f"{display_url(url)} sent a body that does not decode ({exc})") from None
    return b"".join(chunks)


def _media_type(response: httpx.Response) -> str | None:
    value = response.headers.get("content-type", "")
    return value.split(";")[0].strip().lower() or None
