"""Document content: URLs fetched with bounds (time, size, redirects, private addresses), data:
URLs, HTML reduced to text, PDF text, and clear 4xx errors for what cannot be read."""

from __future__ import annotations

import asyncio
import base64
import http.server as http_server
import threading
import time
from pathlib import Path

import pytest
from llama_stack_client import BadRequestError, LlamaStackClient

from conftest import new_id
from stackrag.config import FetchSettings
from stackrag.core.documents import document_text, extract_text
from stackrag.core.fetch import check_address, fetch_url, PrivateAddressError
from stackrag.errors import BadRequest, PayloadTooLarge


def make_pdf(text: str) -> bytes:
    """A minimal one-page PDF with a text object (cross-reference offsets computed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
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


PAGES = {
    "/page.html": ("text/html; charset=utf-8",
                   b"<!doctype html><html><head><title>Capybaras</title><style>p{color:red}</style></head>"
                   b"<body><nav>menu</nav><h1>About capybaras</h1><p>Capybaras are the largest living rodents."
                   b"</p><script>alert('x')</script></body></html>"),
    "/doc.pdf": ("application/pdf", make_pdf("Axolotls can regrow their limbs.")),
    "/notes.txt": ("text/plain", b"Plain notes about otters."),
    "/broken.pdf": ("application/pdf", b"%PDF-1.4\nthis is not really a pdf"),
    "/image.png": ("image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
    "/big.txt": ("text/plain", b"a" * 200_000),
}


class Handler(http_server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.startswith("/redirect/"):
            hops = int(self.path.rsplit("/", 1)[1])
            target = "/notes.txt" if hops == 0 else f"/redirect/{hops - 1}"
            return self._redirect(target)
        if self.path == "/loop":
            return self._redirect("/loop")
        if self.path == "/slow":
            time.sleep(3)
        if self.path not in PAGES:
            self.send_response(404)
            self.end_headers()
            return
        content_type, body = PAGES[self.path]
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, target: str) -> None:
        self.send_response(302)
        self.send_header("location", target)
        self.end_headers()


@pytest.fixture(scope="module")
def site():
    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


ALLOW = FetchSettings(allow_private_urls=True, timeout_seconds=2, max_bytes=100_000, max_redirects=3)


def text_of(content, mime=None, settings=ALLOW, max_bytes=1_000_000):
    return asyncio.run(document_text(content, mime, settings, max_bytes))


def test_html_is_reduced_to_readable_text(site):
    text = text_of(f"{site}/page.html", "text/html")
    assert text.startswith("Capybaras")
    assert "Capybaras are the largest living rodents." in text
    assert "<" not in text and "alert" not in text and "color:red" not in text and "menu" not in text


def test_declared_text_plain_still_parses_html_and_pdf(site):
    # The tutorial declares text/plain for every URL; the bytes decide.
    assert "largest living rodents" in text_of(f"{site}/page.html", "text/plain")
    assert "Axolotls can regrow their limbs." in text_of(f"{site}/doc.pdf", "text/plain")


def test_pdf_text_and_broken_pdf(site):
    assert text_of(f"{site}/doc.pdf", "application/pdf").strip() == "Axolotls can regrow their limbs."
    with pytest.raises(BadRequest, match="could not read PDF"):
        text_of(f"{site}/broken.pdf", "application/pdf")


def test_unsupported_types_say_what_is_supported(site):
    with pytest.raises(BadRequest, match="image/png.*supported types"):
        text_of(f"{site}/image.png")
    with pytest.raises(BadRequest, match="image content"):
        text_of({"type": "image", "image": {"url": "x"}})


def test_redirects_are_followed_and_bounded(site):
    assert text_of(f"{site}/redirect/2") == "Plain notes about otters."
    with pytest.raises(BadRequest, match="too many redirects"):
        text_of(f"{site}/redirect/5")
    with pytest.raises(BadRequest, match="too many redirects"):
        text_of(f"{site}/loop")


def test_size_time_and_status_are_bounded(site):
    with pytest.raises(PayloadTooLarge, match="100000 bytes"):
        text_of(f"{site}/big.txt")
    with pytest.raises(BadRequest, match="longer than 0.5 s"):
        text_of(f"{site}/slow", settings=ALLOW.model_copy(update={"timeout_seconds": 0.5}))
    with pytest.raises(BadRequest, match="HTTP 404"):
        text_of(f"{site}/missing")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.1", "0.0.0.0"])
def test_loopback_is_refused_unless_allowed(site, host):
    port = site.rsplit(":", 1)[1]
    url = f"http://{host}:{port}/notes.txt"
    with pytest.raises(BadRequest, match="private, loopback or link-local.*allow_private_urls"):
        asyncio.run(fetch_url(url, FetchSettings(allow_private_urls=False, timeout_seconds=2)))


def test_credentials_never_appear_in_errors(site):
    port = site.rsplit(":", 1)[1]
    with pytest.raises(BadRequest) as err:
        asyncio.run(fetch_url(f"http://user:hunter2@127.0.0.1:{port}/x", FetchSettings(timeout_seconds=2)))
    assert "hunter2" not in err.value.message


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "::1",
                "::ffff:127.0.0.1", "fc00::1", "fe80::1", "224.0.0.1", "0.0.0.0"],
)
def test_private_addresses_are_blocked(address):
    # Checked without connecting: no traffic may go to these addresses from here.
    with pytest.raises(PrivateAddressError):
        check_address(address, allow_private=False)
    check_address(address, allow_private=True)


def test_public_addresses_pass_the_check():
    for address in ("8.8.8.8", "2606:4700:4700::1111"):
        check_address(address, allow_private=False)


def test_other_schemes_are_refused():
    with pytest.raises(BadRequest, match="only be ingested from the CLI"):
        text_of("file:///etc/passwd")
    with pytest.raises(BadRequest, match="cannot fetch ftp"):
        asyncio.run(fetch_url("ftp://example.com/x", ALLOW))


def test_data_urls():
    assert text_of("data:text/plain;base64," + base64.b64encode("héllo".encode()).decode()) == "héllo"
    assert text_of("data:text/plain,caf%C3%A9%20au%20lait") == "café au lait"
    assert text_of("data:text/html,%3Cp%3Ehi%3C%2Fp%3E") == "hi"
    pdf = base64.b64encode(make_pdf("Data URL PDFs work.")).decode()
    assert text_of(f"data:application/pdf;base64,{pdf}").strip() == "Data URL PDFs work."
    with pytest.raises(BadRequest, match="malformed data"):
        text_of("data:text/plain;base64")


def test_extract_text_normalises():
    assert extract_text(b"a\r\nb\rc\x00d\n\n\n\ne", "text/markdown") == "a\nb\ncd\n\ne"


def test_server_ingests_pdf_and_html_urls(stack, site):
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


def test_server_rejects_a_failing_document_and_writes_nothing(stack, site):
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


def test_cli_style_local_file_as_data_url(stack, tmp_path: Path):
    from stackrag.cli import _document

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
