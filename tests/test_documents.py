"""Document content: URLs fetched with bounds (time, size, redirects, private addresses), data:
URLs, HTML reduced to text, PDF text, and clear 4xx errors for what cannot be read.

Every connection made here goes to 127.0.0.1 or ::1. Private and metadata addresses (10.x,
169.254.169.254, ...) are tested through `check_address` and a stubbed backend, never dialled.
"""

from __future__ import annotations

import asyncio
import base64
import http.server as http_server
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpcore
import pytest
from llama_stack_client import BadRequestError, LlamaStackClient

from conftest import new_id
from stackrag.config import FetchSettings
from stackrag.content import fetch
from stackrag.content.documents import document_text, extract_text, html_to_text, parse_data_url
from stackrag.content.fetch import GuardedBackend, PrivateAddressError, check_address, fetch_url
from stackrag.errors import BadRequest, PayloadTooLarge


def make_pdf(text: str | None) -> bytes:
    """A minimal one-page PDF with a Helvetica text object (or none), cross-reference offsets computed."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text is not None else b""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


HTML_PAGE = (
    b"<!doctype html><html><head><title>Capybaras</title><style>p{color:red}</style></head>"
    b"<body><nav>menu</nav><header>site header</header><h1>About capybaras</h1>"
    b"<p>Capybaras are the <b>largest</b> living rodents.</p><script>alert('x')</script>"
    b"<ul><li>They swim.</li><li>They graze.</li></ul><footer>copyright</footer></body></html>"
)

PAGES = {
    "/page.html": ("text/html; charset=utf-8", HTML_PAGE),
    # Served as HTML but without a doctype, so only the server's type says it is HTML.
    "/fragment": ("text/html", b"<div><p>Fragment <i>text</i></p><script>var x</script></div>"),
    "/doc.pdf": ("application/pdf", make_pdf("Axolotls can regrow their limbs.")),
    "/empty.pdf": ("application/pdf", make_pdf(None)),
    "/notes.txt": ("text/plain", b"Plain notes about otters."),
    "/latin1.txt": ("text/plain; charset=iso-8859-1", "caf\u00e9 cr\u00e8me".encode("latin-1")),
    "/notes.bin": ("application/octet-stream", b"# Notes\n\nServed as octet-stream but plainly text."),
    "/blob.bin": ("application/octet-stream", b"\x00\x01\x02\xff" * 64),
    "/broken.pdf": ("application/pdf", b"%PDF-1.4\nthis is not really a pdf"),
    "/login.pdf": ("application/pdf", b"<!doctype html><html><body>Please log in</body></html>"),
    "/image.png": ("image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
    "/big.txt": ("text/plain", b"a" * 200_000),
}


class Handler(http_server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeouts, size caps): expected

    def _route(self) -> None:
        if self.path.startswith("/redirect/"):
            hops = int(self.path.rsplit("/", 1)[1])
            return self._redirect("/notes.txt" if hops == 0 else f"/redirect/{hops - 1}")
        routes = {
            "/loop": lambda: self._redirect("/loop"),
            "/to-file": lambda: self._redirect("file:///etc/passwd"),
            "/to-second-loopback": lambda: self._redirect(f"http://127.0.0.2:{self.server.server_address[1]}/notes.txt"),
            "/no-location": lambda: self._send(302, "text/plain", b"moved, but where?"),
            "/slow": self._slow,
            "/trickle": self._trickle,
            "/unsized-big": self._unsized_big,
            "/host": lambda: self._send(200, "text/plain", self.headers.get("host", "").encode()),
        }
        if self.path in routes:
            return routes[self.path]()
        if self.path not in PAGES:
            return self._send(404, "text/plain", b"not here")
        self._send(200, *PAGES[self.path])

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, target: str) -> None:
        self.send_response(302)
        self.send_header("location", target)
        self.send_header("content-length", "0")
        self.end_headers()

    def _slow(self) -> None:
        time.sleep(2)
        self._send(200, "text/plain", b"too late")

    def _trickle(self) -> None:
        # Each byte arrives well within a per-read timeout; only an overall deadline stops this.
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        for _ in range(20):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.1)

    def _unsized_big(self) -> None:
        # HTTP/1.0 without content-length: the body ends when the connection closes, so only
        # counting while streaming can enforce the cap.
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        for _ in range(50):
            self.wfile.write(b"b" * 10_000)


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


ALLOW = FetchSettings(allow_private_urls=True, timeout_seconds=2, max_bytes=100_000, max_redirects=3)
DENY = ALLOW.model_copy(update={"allow_private_urls": False})


def text_of(content: Any, mime: str | None = None, settings: FetchSettings = ALLOW, max_bytes: int = 1_000_000) -> str:
    return asyncio.run(document_text(content, mime, settings, max_bytes))


def port_of(site: str) -> str:
    return site.rsplit(":", 1)[1]


# --- fetching -------------------------------------------------------------------------------


def test_fetch_returns_bytes_type_charset_and_final_url(site: str) -> None:
    fetched = asyncio.run(fetch_url(f"{site}/redirect/0", ALLOW))
    assert fetched.content == b"Plain notes about otters."
    assert fetched.content_type == "text/plain" and fetched.charset is None
    assert fetched.final_url == f"{site}/notes.txt"
    latin = asyncio.run(fetch_url(f"{site}/latin1.txt", ALLOW))
    assert latin.charset == "iso-8859-1"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.1", "0.0.0.0"])
def test_loopback_is_refused_unless_allowed(site: str, host: str) -> None:
    url = f"http://{host}:{port_of(site)}/notes.txt"
    with pytest.raises(BadRequest, match=r"private, loopback or link-local.*fetch\.allow_private_urls.*"
                                         r"STACKRAG_ALLOW_PRIVATE_URLS=1"):
        asyncio.run(fetch_url(url, DENY))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_is_fetched_when_allowed(site: str, host: str) -> None:
    url = f"http://{host}:{port_of(site)}/notes.txt"
    assert asyncio.run(fetch_url(url, ALLOW)).content == b"Plain notes about otters."


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "198.18.0.1", "127.0.0.1",
     "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "::ffff:127.0.0.1",
     "::ffff:169.254.169.254", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "ff02::1",
     "64:ff9b::a00:1", "2002:7f00:1::1"],
)
def test_private_addresses_are_blocked(address: str) -> None:
    # Checked without connecting: no traffic may go to these addresses from here.
    if "169.254.169.254" in address:
        # Cloud metadata: refused even when private URLs are allowed.
        for allow in (False, True):
            with pytest.raises(PrivateAddressError, match="metadata"):
                check_address(address, allow_private=allow)
        return
    with pytest.raises(PrivateAddressError, match="private"):
        check_address(address, allow_private=False)
    check_address(address, allow_private=True)


def test_public_addresses_pass_the_check() -> None:
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        check_address(address, allow_private=False)


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Stands in for the real network: records what would be dialled, dials nothing."""

    def __init__(self) -> None:
        self.dialled: list[str] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        self.dialled.append(host)
        raise httpcore.ConnectError("not dialled in tests")


def test_any_private_answer_refuses_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name answering with a public and a private address is a rebinding setup: refused outright,
    # before anything is dialled.
    async def resolve(host: str, port: int) -> list[str]:
        return ["8.8.8.8", "169.254.169.254"]

    monkeypatch.setattr(fetch, "resolve", resolve)
    backend = GuardedBackend(allow_private=False)
    recorder = RecordingBackend()
    backend._inner = recorder  # type: ignore[assignment]
    with pytest.raises(PrivateAddressError, match="169.254.169.254"):
        asyncio.run(backend.connect_tcp("rebind.example", 80))
    assert recorder.dialled == []


def test_the_checked_address_is_the_one_dialled(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The name exists only in our resolver: the connection can only have gone to the address the
    # guard resolved (and checked), while the request still names the host.
    async def resolve(host: str, port: int) -> list[str]:
        assert host == "docs.example"
        return ["127.0.0.1"]

    monkeypatch.setattr(fetch, "resolve", resolve)
    fetched = asyncio.run(fetch_url(f"http://docs.example:{port_of(site)}/host", ALLOW))
    assert fetched.content == f"docs.example:{port_of(site)}".encode()


def test_unreachable_addresses_fall_through_to_the_next(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test server listens on 127.0.0.1 only, so ::1 is refused (or absent) and 127.0.0.1 answers.
    async def resolve(host: str, port: int) -> list[str]:
        return ["::1", "127.0.0.1"]

    monkeypatch.setattr(fetch, "resolve", resolve)
    assert asyncio.run(fetch_url(f"http://dual.example:{port_of(site)}/notes.txt", ALLOW)).content


def test_every_redirect_hop_is_checked(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in for "a public page redirects to a private one": the first loopback address counts
    # as public here, the second as private.
    real = fetch.is_blocked
    monkeypatch.setattr(fetch, "is_blocked", lambda ip: str(ip) == "127.0.0.2" or (real(ip) and str(ip) != "127.0.0.1"))
    assert asyncio.run(fetch_url(f"{site}/notes.txt", DENY)).content
    with pytest.raises(BadRequest, match=r"refused to fetch http://127\.0\.0\.2:\d+/notes\.txt.*private"):
        asyncio.run(fetch_url(f"{site}/to-second-loopback", DENY))


def test_redirects_are_followed_and_bounded(site: str) -> None:
    assert text_of(f"{site}/redirect/1") == "Plain notes about otters."
    assert text_of(f"{site}/redirect/2") == "Plain notes about otters."
    with pytest.raises(BadRequest, match="too many redirects"):
        text_of(f"{site}/redirect/3", settings=ALLOW.model_copy(update={"max_redirects": 2}))
    with pytest.raises(BadRequest, match="too many redirects"):
        text_of(f"{site}/loop")
    with pytest.raises(BadRequest, match="redirects to a non-http URL"):
        text_of(f"{site}/to-file")
    with pytest.raises(BadRequest, match="HTTP 302"):
        text_of(f"{site}/no-location")


def test_size_is_capped_by_header_and_while_streaming(site: str) -> None:
    with pytest.raises(PayloadTooLarge, match="the limit is 100000 bytes"):
        text_of(f"{site}/big.txt")
    with pytest.raises(PayloadTooLarge, match="limit of 100000 bytes"):
        text_of(f"{site}/unsized-big")
    # The per-document limit tightens the fetch limit.
    with pytest.raises(PayloadTooLarge, match="100 bytes"):
        text_of(f"{site}/page.html", max_bytes=100, settings=ALLOW)


def test_time_is_bounded(site: str) -> None:
    short = ALLOW.model_copy(update={"timeout_seconds": 0.5})
    for path in ("/slow", "/trickle"):
        started = time.monotonic()
        with pytest.raises(BadRequest, match="longer than 0.5 s"):
            text_of(f"{site}{path}", settings=short)
        assert time.monotonic() - started < 1.5


def test_status_and_connection_errors_are_bad_requests(site: str) -> None:
    with pytest.raises(BadRequest, match=r"HTTP 404 Not Found"):
        text_of(f"{site}/missing")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(BadRequest, match="cannot connect to 127.0.0.1 port .*Connection refused"):
        asyncio.run(fetch_url(f"http://127.0.0.1:{closed_port}/", ALLOW))
    with pytest.raises(BadRequest, match="cannot resolve host 'no-such-host.invalid'"):
        asyncio.run(fetch_url("http://no-such-host.invalid/x", ALLOW))
    with pytest.raises(BadRequest, match="invalid URL"):
        asyncio.run(fetch_url("http://host:notaport/x", ALLOW))


def test_credentials_never_appear_in_errors(site: str) -> None:
    for url, settings in [
        (f"http://user:hunter2@127.0.0.1:{port_of(site)}/x", DENY),
        (f"http://user:hunter2@127.0.0.1:{port_of(site)}/missing", ALLOW),
        ("http://user:hunter2@no-such-host.invalid/x", ALLOW),
    ]:
        with pytest.raises(BadRequest) as err:
            asyncio.run(fetch_url(url, settings))
        assert "hunter2" not in err.value.message and "user" not in err.value.message


def test_other_schemes_are_refused() -> None:
    with pytest.raises(BadRequest, match="only be ingested from the CLI"):
        text_of("file:///etc/passwd")
    with pytest.raises(BadRequest, match="only be ingested from the CLI"):
        text_of({"uri": "file:///etc/passwd"})
    with pytest.raises(BadRequest, match="cannot fetch ftp: URLs"):
        asyncio.run(fetch_url("ftp://example.com/x", ALLOW))


def self_signed_certificate(directory: Path) -> tuple[Path, Path] | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def test_https_sends_the_host_name_and_verifies_the_certificate(tmp_path: Path) -> None:
    # The guard dials an IP address; TLS must still see the URL's host name (SNI, verification).
    files = self_signed_certificate(tmp_path)
    if files is None:
        pytest.skip("openssl is not installed")
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*files)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one() -> None:
        conn, _ = listener.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass  # the client rejects the self-signed certificate mid-handshake
        finally:
            conn.close()

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    with pytest.raises(BadRequest, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(fetch_url(f"https://localhost:{listener.getsockname()[1]}/", ALLOW))
    thread.join(2)
    listener.close()
    assert names == ["localhost"]


# --- content --------------------------------------------------------------------------------


def test_html_is_reduced_to_readable_text(site: str) -> None:
    text = text_of(f"{site}/page.html", "text/html")
    # Main content as Markdown: the page's <h1> names it (the <title> only when there is none).
    assert text == "# About capybaras\n\nCapybaras are the largest living rodents.\n\n- They swim.\n- They graze."
    assert text_of(f"{site}/fragment") == "Fragment text"


def test_html_keeps_blocks_collapses_spaces_and_preserves_pre() -> None:
    html = ("<div>one  <span>two</span>\n three</div><div><div><p>nested</p></div></div>"
            "<p>a<br>b</p><table><tr><th>k</th><th>v</th></tr><tr><td>1</td><td>2</td></tr></table>"
            "<pre>def f():\n    return 1</pre><!-- hidden comment --><p hidden>secret</p>")
    assert html_to_text(html) == "one two three\n\nnested\n\na\nb\n\nk v\n1 2\n\n```\ndef f():\n    return 1\n```"
    assert html_to_text("<div>" * 5000 + "deep" + "</div>" * 5000) == "deep"


def test_declared_text_plain_still_parses_html_and_pdf(site: str) -> None:
    # The tutorial declares text/plain for every URL; the bytes and the server's type decide.
    assert "largest living rodents" in text_of(f"{site}/page.html", "text/plain")
    assert "<" not in text_of(f"{site}/fragment", "text/plain")
    assert "Axolotls can regrow their limbs." in text_of(f"{site}/doc.pdf", "text/plain")


def test_declared_type_wins_otherwise(site: str) -> None:
    # Markdown that happens to be served as HTML stays as sent.
    assert text_of(f"{site}/fragment", "text/markdown").startswith("<div>")


def test_pdf_text_and_unreadable_pdfs(site: str) -> None:
    assert text_of(f"{site}/doc.pdf", "application/pdf") == "Axolotls can regrow their limbs."
    with pytest.raises(BadRequest, match="could not read PDF"):
        text_of(f"{site}/broken.pdf", "application/pdf")
    with pytest.raises(BadRequest, match="could not read PDF.*an HTML page, not a PDF"):
        text_of(f"{site}/login.pdf", "application/pdf")
    with pytest.raises(BadRequest, match="no extractable text"):
        text_of(f"{site}/empty.pdf")


def test_charsets_and_octet_streams(site: str) -> None:
    assert text_of(f"{site}/latin1.txt") == "café crème"
    assert text_of(f"{site}/notes.bin").startswith("# Notes")
    with pytest.raises(BadRequest, match="application/octet-stream.*supported types"):
        text_of(f"{site}/blob.bin")


def test_unsupported_types_say_what_is_supported(site: str) -> None:
    with pytest.raises(BadRequest, match="image/png.*supported types: text/plain"):
        text_of(f"{site}/image.png")
    with pytest.raises(BadRequest, match="image/png"):
        text_of(f"{site}/image.png", "image/png")
    with pytest.raises(BadRequest, match="image content is not supported"):
        text_of({"type": "image", "image": {"url": "x"}})
    with pytest.raises(BadRequest, match="unsupported content item"):
        text_of({"type": "video"})


def test_data_urls() -> None:
    assert text_of("data:text/plain;base64," + base64.b64encode("héllo".encode()).decode()) == "héllo"
    assert text_of("data:text/plain,caf%C3%A9%20au%20lait") == "café au lait"
    assert text_of("data:text/plain;charset=iso-8859-1,caf%E9") == "café"
    assert text_of("data:text/html,%3Cp%3Ehi%3C%2Fp%3E") == "hi"
    # Unpadded, URL-safe base64 (as browsers and some clients write it).
    urlsafe = base64.urlsafe_b64encode("??>>".encode()).decode().rstrip("=")
    assert text_of(f"data:text/plain;base64,{urlsafe}") == "??>>"
    pdf = base64.b64encode(make_pdf("Data URL PDFs work.")).decode()
    assert text_of(f"data:application/pdf;base64,{pdf}") == "Data URL PDFs work."
    assert parse_data_url("data:text/markdown;charset=UTF-8;base64,IyBU") == (b"# T", "text/markdown", "UTF-8")
    with pytest.raises(BadRequest, match="malformed data"):
        text_of("data:text/plain;base64")
    with pytest.raises(BadRequest, match="malformed base64"):
        text_of("data:text/plain;base64,@@@")
    with pytest.raises(PayloadTooLarge, match="limit of 10 bytes"):
        text_of("data:text/plain," + "x" * 11, max_bytes=10)
    with pytest.raises(BadRequest, match="image/png"):
        text_of("data:image/png;base64,iVBORw0KGgo=")


def test_content_shapes() -> None:
    assert text_of("just some text") == "just some text"
    assert text_of({"type": "text", "text": "inline"}) == "inline"
    assert text_of(["one", {"type": "text", "text": "two"}, "data:,three"]) == "one\ntwo\nthree"
    # Prose that begins like a URL is still prose.
    assert text_of("http://example.com is a placeholder domain") == "http://example.com is a placeholder domain"
    assert text_of("data: the numbers speak") == "data: the numbers speak"
    assert text_of("<p>inline <b>html</b></p>", "text/html") == "inline html"
    with pytest.raises(PayloadTooLarge):
        text_of("x" * 11, max_bytes=10)
    # Items of one document share its limit.
    with pytest.raises(PayloadTooLarge):
        text_of(["x" * 6, "y" * 6], max_bytes=10)
    with pytest.raises(BadRequest, match="no content"):
        text_of(None)


def test_extract_text_normalises() -> None:
    assert extract_text(b"a\r\nb\rc\x00d\n\n\n\ne", "text/markdown") == "a\nb\ncd\n\ne"
    assert extract_text("\ufeffBOM".encode("utf-8"), "text/x-rst") == "BOM"
    assert extract_text("utf-16 text".encode("utf-16"), None) == "utf-16 text"
    assert extract_text(b"\xfe invalid \xc3", "text/plain") == "\ufffd invalid \ufffd"


def test_extract_text_names_the_source() -> None:
    with pytest.raises(BadRequest, match=r"image/gif \(http://x/y\.gif\)"):
        extract_text(b"GIF89a", None, None, "image/gif", source="http://x/y.gif")


# --- through the server ---------------------------------------------------------------------


def test_server_ingests_pdf_and_html_urls(stack, site: str) -> None:
    client = LlamaStackClient(base_url=stack.url)
    db = new_id("docs")
    client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
    client.tool_runtime.rag_tool.insert(vector_db_id=db, chunk_size_in_tokens=128, documents=[
        {"document_id": "pdf", "content": f"{site}/doc.pdf", "mime_type": "application/pdf", "metadata": {}},
        {"document_id": "html", "content": {"uri": f"{site}/page.html"}, "mime_type": "text/html", "metadata": {}},
    ])
    hits = client.vector_io.query(vector_db_id=db, query="which amphibian regrows limbs?", params={"max_chunks": 2})
    assert hits.chunks[0].metadata["document_id"] == "pdf"
    assert "Axolotls" in hits.chunks[0].content
    client.vector_dbs.unregister(vector_db_id=db)


def test_server_rejects_a_failing_document_and_writes_nothing(stack, site: str) -> None:
    client = LlamaStackClient(base_url=stack.url)
    db = new_id("docs")
    client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
    with pytest.raises(BadRequestError) as err:
        client.tool_runtime.rag_tool.insert(vector_db_id=db, chunk_size_in_tokens=128, documents=[
            {"document_id": "ok", "content": f"{site}/notes.txt", "metadata": {}},
            {"document_id": "gone", "content": f"{site}/missing", "metadata": {}},
        ])
    assert "documents[1] (gone)" in str(err.value) and "HTTP 404" in str(err.value)
    hits = client.vector_io.query(vector_db_id=db, query="otters", params={"score_threshold": -1.0})
    assert hits.chunks == []
    client.vector_dbs.unregister(vector_db_id=db)


def test_cli_style_local_file_as_data_url(stack, tmp_path: Path) -> None:
    from stackrag.cli.ingest import document as _document

    path = tmp_path / "guide.md"
    path.write_text("# Guide\n\nWombats produce cube-shaped droppings.\n")
    doc = _document(str(path))
    assert doc["content"].startswith("data:text/markdown;base64,")
    client = LlamaStackClient(base_url=stack.url)
    db = new_id("cli")
    client.vector_dbs.register(vector_db_id=db, embedding_model="all-MiniLM-L6-v2")
    client.tool_runtime.rag_tool.insert(vector_db_id=db, documents=[doc], chunk_size_in_tokens=64)
    hit = client.vector_io.query(vector_db_id=db, query="cube-shaped droppings").chunks[0]
    assert "Wombats" in hit.content and hit.metadata["source"] == "guide.md"
    client.vector_dbs.unregister(vector_db_id=db)
