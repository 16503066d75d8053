"""A RAG document's `content` as plain text: inline text, data: URLs, http(s) URLs; plain text,
Markdown, reStructuredText (any text/*), HTML (reduced to readable text) and PDF."""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from ..config import FetchSettings
from ..errors import BadRequest, PayloadTooLarge
from .fetch import display_url, fetch_url
from .html import html_to_text
from .pdf import pdf_to_text
from .parsing import DEFAULT_TIMEOUT as DEFAULT_PARSE_TIMEOUT
from .parsing import parsers

# A string is a URL only when it looks like nothing else: prose that starts with "http://x.org is"
# or "data: the numbers" stays text.
URL_PATTERN = re.compile(r"^(https?://\S+$|data:[^,\s]*(,|$)|file://)", re.I)
PDF = "application/pdf"
OCTET = "application/octet-stream"
HTML_TYPES = {"text/html", "application/xhtml+xml"}
# Types outside text/* that are text all the same.
TEXT_APPLICATION_TYPES = {
    "application/json", "application/xml", "application/x-rst", "application/x-markdown",
    "application/markdown", "application/yaml", "application/x-yaml", "application/javascript",
    "application/x-tex", "application/x-sh",
}
SUPPORTED = "text/plain, text/markdown, text/x-rst, text/html, application/pdf (and other text/* types)"
BOMS = [(codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


@dataclass
class Budget:
    """Bytes left for one document; a list of content items shares one limit."""

    limit: int
    used: int = 0
    parse_timeout: float = DEFAULT_PARSE_TIMEOUT

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise PayloadTooLarge(f"the document is larger than the limit of {self.limit} bytes")

    @property
    def left(self) -> int:
        return max(self.limit - self.used, 0)


@dataclass
class DocumentText:
    """A document's text, and the markup it is in when the extractor wrote it: HTML pages and
    PDFs come out as Markdown (headings, fenced code), so their chunks know their sections."""

    text: str
    markup: str | None = None


async def document_text(content: Any, mime_type: str | None, settings: FetchSettings, max_bytes: int,
                        parse_timeout: float = DEFAULT_PARSE_TIMEOUT) -> str:
    return (await document_content(content, mime_type, settings, max_bytes, parse_timeout)).text


async def document_content(content: Any, mime_type: str | None, settings: FetchSettings, max_bytes: int,
                           parse_timeout: float = DEFAULT_PARSE_TIMEOUT) -> DocumentText:
    return await _content_text(content, mime_type, settings, Budget(max_bytes, parse_timeout=parse_timeout))


async def extract(data: bytes, mime_type: str | None, charset: str | None = None, served_type: str | None = None,
                  source: str = "", parse_timeout: float = DEFAULT_PARSE_TIMEOUT) -> str:
    return (await extract_content(data, mime_type, charset, served_type, source, parse_timeout)).text


async def extract_content(data: bytes, mime_type: str | None, charset: str | None = None,
                          served_type: str | None = None, source: str = "",
                          parse_timeout: float = DEFAULT_PARSE_TIMEOUT) -> DocumentText:
    """extract_document, off the event loop: HTML and PDF in a parse worker (bounded in time and
    memory, parsing.py), anything else (plain decoding) on a thread."""
    kind = effective_type(data, mime_type, served_type)
    if kind == PDF or kind in HTML_TYPES:
        return await parsers(parse_timeout).arun("extract_document", data, mime_type, charset, served_type, source,
                                                 what=source or "the document")
    return await asyncio.to_thread(extract_document, data, mime_type, charset, served_type, source)


async def _content_text(content: Any, mime_type: str | None, settings: FetchSettings, budget: Budget) -> DocumentText:
    if isinstance(content, list):
        parts = [await _content_text(item, mime_type, settings, budget) for item in content]
        markups = {p.markup for p in parts}
        return DocumentText("\n".join(p.text for p in parts), markups.pop() if len(markups) == 1 else None)
    if isinstance(content, dict):
        return await _item_text(content, mime_type, settings, budget)
    if isinstance(content, str):
        if URL_PATTERN.match(content.strip()):
            return await _url_text(content.strip(), mime_type, settings, budget)
        return await _inline_text(content, mime_type, budget)
    if content is None:
        raise BadRequest("the document has no content")
    raise BadRequest("content must be text, a URL, a {'uri': ...} object, or a list of content items")


async def _item_text(item: dict[str, Any], mime_type: str | None, settings: FetchSettings,
                     budget: Budget) -> DocumentText:
    if "uri" in item:
        if not isinstance(item["uri"], str):
            raise BadRequest("'uri' must be a string")
        return await _url_text(item["uri"].strip(), mime_type, settings, budget)
    kind = item.get("type")
    if kind == "text":
        if not isinstance(item.get("text"), str):
            raise BadRequest("a text content item needs a 'text' string")
        return await _inline_text(item["text"], mime_type, budget)
    if kind == "image":
        raise BadRequest("image content is not supported; send text, a URL, or a PDF")
    raise BadRequest(f"unsupported content item of type {kind!r}; use 'text' items or {{'uri': ...}}")


async def _inline_text(text: str, mime_type: str | None, budget: Budget) -> DocumentText:
    data = text.encode("utf-8", errors="replace")
    budget.take(len(data))
    # Inline HTML is still HTML; any other declared type is taken as the text it already is.
    if base_type(mime_type) in HTML_TYPES:
        return await extract_content(data, mime_type, "utf-8", None, "the inline HTML", budget.parse_timeout)
    return DocumentText(normalise(text))


async def _url_text(url: str, mime_type: str | None, settings: FetchSettings, budget: Budget) -> DocumentText:
    lowered = url.lower()
    if lowered.startswith("file://"):
        raise BadRequest("local files can only be ingested from the CLI (stackrag ingest PATH)")
    if lowered.startswith("data:"):
        data, served_type, charset = parse_data_url(url)
        budget.take(len(data))
        source = "a data: URL"
    else:
        limited = settings.model_copy(update={"max_bytes": min(settings.max_bytes, budget.left)})
        fetched = await fetch_url(url, limited)
        data, served_type, charset = fetched.content, fetched.content_type, fetched.charset
        budget.take(len(data))
        source = display_url(url)
    return await extract_content(data, mime_type, charset, served_type, source, budget.parse_timeout)


def parse_data_url(url: str) -> tuple[bytes, str | None, str | None]:
    """The bytes, media type and charset of a data: URL (RFC 2397)."""
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise BadRequest("malformed data: URL (no comma before the data)")
    params = [p.strip() for p in header.split(";")]
    media_type = params[0].lower() or None
    charset = next((p.split("=", 1)[1].strip('"') for p in params[1:] if p.lower().startswith("charset=")), None)
    raw = unquote_to_bytes(payload)
    if any(p.lower() == "base64" for p in params[1:]):
        return decode_base64(raw), media_type, charset
    return raw, media_type, charset


def decode_base64(raw: bytes) -> bytes:
    # Line breaks, missing padding and the URL-safe alphabet all occur in data: URLs in the wild.
    compact = re.sub(rb"\s+", b"", raw).rstrip(b"=")
    padded = compact + b"=" * (-len(compact) % 4)
    alphabet = b"-_" if b"-" in compact or b"_" in compact else b"+/"
    try:
        return base64.b64decode(padded, altchars=alphabet, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"malformed base64 in data: URL: {exc}") from exc


def base_type(mime_type: str | None) -> str:
    return (mime_type or "").split(";")[0].strip().lower()


def sniff(data: bytes) -> str | None:
    """PDF or HTML when the leading bytes say so unmistakably."""
    if b"%PDF-" in data[:1024]:
        return PDF
    head = _without_bom(data[:1024]).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    return None


def effective_type(data: bytes, mime_type: str | None, served_type: str | None) -> str:
    """How to read the bytes. The caller's type wins, except that callers (the Llama Stack
    tutorial among them) declare text/plain for anything: then the bytes and the server decide."""
    declared, served, sniffed = base_type(mime_type), base_type(served_type), sniff(data)
    if declared in ("", "text/plain", OCTET):
        if sniffed:
            return sniffed
        if served in HTML_TYPES or served == PDF or (declared != "text/plain" and served):
            return served
        return declared
    # PDF bytes decoded as text are never what anyone meant.
    if sniffed == PDF and declared.startswith("text/"):
        return PDF
    return declared


def extract_text(data: bytes, mime_type: str | None, charset: str | None = None, served_type: str | None = None,
                 source: str = "") -> str:
    return extract_document(data, mime_type, charset, served_type, source).text


def extract_document(
    data: bytes,
    mime_type: str | None,
    charset: str | None = None,
    served_type: str | None = None,
    source: str = "",
) -> DocumentText:
    """Text of a document: `mime_type` is what the caller declared, `served_type` what the server
    said (both may carry parameters); `source` names the document in error messages."""
    kind = effective_type(data, mime_type, served_type)
    where = f" ({source})" if source else ""
    if kind == PDF:
        return DocumentText(normalise(pdf_to_text(data, where)), "markdown")
    if kind in HTML_TYPES:
        # The bytes, not a decoded string: without a charset from the server, the page's own
        # <meta charset> (or BOM) says how to read it.
        return DocumentText(normalise(html_to_text(data, charset)), "markdown")
    if is_text_type(kind) or (kind in ("", OCTET) and looks_like_text(data, charset)):
        return DocumentText(normalise(decode(data, charset)))
    shown = kind or "unknown"
    raise BadRequest(f"mime type {shown}{where} is not supported (binary content); supported types: {SUPPORTED}")


def is_text_type(kind: str) -> bool:
    return kind.startswith("text/") or kind in TEXT_APPLICATION_TYPES or kind.endswith(("+json", "+xml"))


def looks_like_text(data: bytes, charset: str | None) -> bool:
    """For untyped or application/octet-stream bytes: text if they decode cleanly and hold no NULs."""
    sample = data[:8192]
    if any(sample.startswith(bom) for bom, _ in BOMS):
        return True
    if b"\x00" in sample:
        return False
    try:
        decoder = codecs.getincrementaldecoder(charset or "utf-8")()
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        # final=False: the sample may end inside a multi-byte character.
        decoder.decode(sample, final=len(data) <= len(sample))
    except UnicodeDecodeError:
        return False
    return True


def decode(data: bytes, charset: str | None) -> str:
    # A byte order mark outranks a declared charset (as browsers do).
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _without_bom(data: bytes) -> bytes:
    return data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data


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
    """No NUL bytes, \\n line ends, at most one blank line in a row."""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n{3,}", "\n\n", text)
