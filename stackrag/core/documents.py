"""A RAG document's `content` as plain text: inline text, data: URLs, http(s) URLs; plain text,
Markdown, reStructuredText, HTML (reduced to readable text) and PDF."""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from ..config import FetchSettings
from ..errors import BadRequest, PayloadTooLarge
from .fetch import fetch_url

URL_PATTERN = re.compile(r"^(https?://|data:|file://)", re.I)
HTML_TYPES = {"text/html", "application/xhtml+xml"}
SUPPORTED = "text/plain, text/markdown, text/x-rst, text/html, application/pdf (and other text/* types)"
# Elements whose text is never part of what a reader sees as the document.
DROPPED_TAGS = ["script", "style", "noscript", "template", "nav", "header", "footer", "svg", "head"]


async def document_text(content: Any, mime_type: str | None, settings: FetchSettings, max_bytes: int) -> str:
    if isinstance(content, list):
        parts = [await document_text(item, mime_type, settings, max_bytes) for item in content]
        return "\n".join(parts)
    if isinstance(content, dict):
        if "uri" in content:
            return await _from_url(str(content["uri"]), mime_type, settings, max_bytes)
        kind = content.get("type")
        if kind == "text" and isinstance(content.get("text"), str):
            return _from_inline(content["text"], mime_type, max_bytes)
        if kind == "image":
            raise BadRequest("image content is not supported; send text, a URL, or a PDF")
        raise BadRequest(f"unsupported content item of type {kind!r}")
    if isinstance(content, str):
        if URL_PATTERN.match(content.strip()):
            return await _from_url(content.strip(), mime_type, settings, max_bytes)
        return _from_inline(content, mime_type, max_bytes)
    raise BadRequest("content must be text, a URL, a {'uri': ...} object, or a list of content items")


def _from_inline(text: str, mime_type: str | None, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the document is {len(data)} bytes; the limit is {max_bytes}")
    if _base_type(mime_type) in HTML_TYPES:
        return normalise(html_to_text(text))
    return normalise(text)


async def _from_url(url: str, mime_type: str | None, settings: FetchSettings, max_bytes: int) -> str:
    lowered = url.lower()
    if lowered.startswith("file://"):
        raise BadRequest("local files can only be ingested from the CLI (stackrag ingest PATH)")
    if lowered.startswith("data:"):
        data, served_type, charset = parse_data_url(url)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"the document is {len(data)} bytes; the limit is {max_bytes}")
        return extract_text(data, mime_type or served_type, charset, served_type)
    fetched = await fetch_url(url, settings.model_copy(update={"max_bytes": min(settings.max_bytes, max_bytes)}))
    return extract_text(fetched.content, mime_type, fetched.charset, fetched.content_type)


def parse_data_url(url: str) -> tuple[bytes, str | None, str | None]:
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise BadRequest("malformed data: URL (no comma before the data)")
    params = [p.strip() for p in header.split(";")]
    media_type = params[0].lower() or None
    charset = next((p.split("=", 1)[1] for p in params[1:] if p.lower().startswith("charset=")), None)
    if "base64" in (p.lower() for p in params[1:]):
        try:
            return base64.b64decode(payload, validate=False), media_type, charset
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"malformed base64 in data: URL: {exc}") from exc
    return unquote_to_bytes(payload), media_type, charset


def _base_type(mime_type: str | None) -> str:
    return (mime_type or "").split(";")[0].strip().lower()


def sniff(data: bytes) -> str | None:
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf-"):
        return "application/pdf"
    if head.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    return None


def extract_text(data: bytes, mime_type: str | None, charset: str | None = None, served_type: str | None = None) -> str:
    """Text of a document. The caller's mime type wins, except that bytes which are plainly a PDF
    or an HTML page are parsed as one: the Llama Stack tutorial declares text/plain for everything."""
    declared = _base_type(mime_type) or _base_type(served_type)
    kind = declared
    sniffed = sniff(data)
    if sniffed and declared in ("", "text/plain", "application/octet-stream"):
        kind = sniffed
    elif declared in ("", "application/octet-stream") and _base_type(served_type):
        kind = _base_type(served_type)
    if kind == "application/pdf":
        return normalise(pdf_to_text(data))
    if kind in HTML_TYPES:
        return normalise(html_to_text(decode(data, charset)))
    if kind.startswith("text/") or kind in ("", "application/json", "application/xml", "application/x-rst"):
        if b"\x00" in data[:4096] and not kind.startswith("text/"):
            raise BadRequest(f"the document looks binary; supported types: {SUPPORTED}")
        return normalise(decode(data, charset))
    raise BadRequest(f"mime type {kind!r} is not supported; supported types: {SUPPORTED}")


def decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def html_to_text(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(DROPPED_TAGS):
        tag.decompose()
    body = soup.get_text("\n")
    lines = [" ".join(line.split()) for line in body.splitlines()]
    text = "\n".join(line for line in lines if line)
    return f"{title}\n\n{text}" if title and not text.startswith(title) else text


def pdf_to_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise BadRequest("could not read PDF: it is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
    except BadRequest:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise BadRequest(f"could not read PDF: {type(exc).__name__}: {exc}") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise BadRequest("the PDF has no extractable text (is it a scan? OCR it first)")
    return text


_UNDERLINE = re.compile(r"^([=\-~^*#+`'\"])\1{2,}\s*$")


def title_of(text: str) -> str:
    """A document's title: its first Markdown `#` heading or underlined reST heading, else its first line."""
    lines = [line.strip() for line in text.splitlines()[:80]]
    for i, line in enumerate(lines):
        if line.startswith("#") and line.lstrip("#").strip():
            return line.lstrip("#").strip()
        if line and not _UNDERLINE.match(line) and i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1]):
            return line
    first = next((line for line in lines if line), "")
    return first[:120]


def normalise(text: str) -> str:
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n{3,}", "\n\n", text)
