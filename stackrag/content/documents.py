"""A RAG document's `content` as plain text: inline text, data: URLs, http(s) URLs; plain text,
Markdown, reStructuredText (any text/*), HTML (reduced to readable text) and PDF."""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import io
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from ..config import FetchSettings
from ..errors import BadRequest, PayloadTooLarge
from .fetch import display_url, fetch_url
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


async def document_text(content: Any, mime_type: str | None, settings: FetchSettings, max_bytes: int,
                        parse_timeout: float = DEFAULT_PARSE_TIMEOUT) -> str:
    return await _content_text(content, mime_type, settings, Budget(max_bytes, parse_timeout=parse_timeout))


async def extract(data: bytes, mime_type: str | None, charset: str | None = None, served_type: str | None = None,
                  source: str = "", parse_timeout: float = DEFAULT_PARSE_TIMEOUT) -> str:
    """extract_text, off the event loop: HTML and PDF in a parse worker (bounded in time and memory,
    parsing.py), anything else (plain decoding) on a thread."""
    kind = effective_type(data, mime_type, served_type)
    if kind == PDF or kind in HTML_TYPES:
        return await parsers(parse_timeout).arun("extract_text", data, mime_type, charset, served_type, source,
                                                 what=source or "the document")
    return await asyncio.to_thread(extract_text, data, mime_type, charset, served_type, source)


async def _content_text(content: Any, mime_type: str | None, settings: FetchSettings, budget: Budget) -> str:
    if isinstance(content, list):
        return "\n".join([await _content_text(item, mime_type, settings, budget) for item in content])
    if isinstance(content, dict):
        return await _item_text(content, mime_type, settings, budget)
    if isinstance(content, str):
        if URL_PATTERN.match(content.strip()):
            return await _url_text(content.strip(), mime_type, settings, budget)
        return await _inline_text(content, mime_type, budget)
    if content is None:
        raise BadRequest("the document has no content")
    raise BadRequest("content must be text, a URL, a {'uri': ...} object, or a list of content items")


async def _item_text(item: dict[str, Any], mime_type: str | None, settings: FetchSettings, budget: Budget) -> str:
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


async def _inline_text(text: str, mime_type: str | None, budget: Budget) -> str:
    data = text.encode("utf-8", errors="replace")
    budget.take(len(data))
    # Inline HTML is still HTML; any other declared type is taken as the text it already is.
    if base_type(mime_type) in HTML_TYPES:
        return await extract(data, mime_type, "utf-8", None, "the inline HTML", budget.parse_timeout)
    return normalise(text)


async def _url_text(url: str, mime_type: str | None, settings: FetchSettings, budget: Budget) -> str:
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
    return await extract(data, mime_type, charset, served_type, source, budget.parse_timeout)


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


def extract_text(
    data: bytes,
    mime_type: str | None,
    charset: str | None = None,
    served_type: str | None = None,
    source: str = "",
) -> str:
    """Text of a document: `mime_type` is what the caller declared, `served_type` what the server
    said (both may carry parameters); `source` names the document in error messages."""
    kind = effective_type(data, mime_type, served_type)
    where = f" ({source})" if source else ""
    if kind == PDF:
        return normalise(pdf_to_text(data, where))
    if kind in HTML_TYPES:
        return normalise(html_to_text(decode(data, charset)))
    if is_text_type(kind) or (kind in ("", OCTET) and looks_like_text(data, charset)):
        return normalise(decode(data, charset))
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


# Elements whose text is never part of what a reader sees as the document.
DROPPED_TAGS = {"script", "style", "noscript", "template", "nav", "header", "footer", "svg", "head", "iframe",
                "object", "canvas", "button", "select"}
# Block elements start on a new line; these also set a paragraph apart with a blank line.
PARAGRAPH_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "ul", "ol", "dl",
                  "figure", "section", "article", "main", "aside", "details", "form", "fieldset"}
LINE_TAGS = {"div", "li", "tr", "dt", "dd", "caption", "figcaption", "summary", "address", "hr", "legend",
             "thead", "tbody", "tfoot", "body", "option"}
CELL_TAGS = {"td", "th"}
_SPACES = re.compile(r"\s+")


class PlainText:
    """Accumulates text with HTML's whitespace rules: runs of spaces collapse except in <pre>."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._last = "\n"
        # Line breaks already at the end; nested blocks (<li> in <ul>) ask for breaks, not add them.
        self._trailing_breaks = 2

    def text(self, value: str, preformatted: bool) -> None:
        if not preformatted:
            value = _SPACES.sub(" ", value)
            if self._last in ("\n", " "):
                value = value.lstrip(" ")
        if value:
            self._parts.append(value)
            self._last = value[-1]
            stripped = value.rstrip("\n")
            self._trailing_breaks = len(value) - len(stripped) if stripped else self._trailing_breaks + len(value)

    def breaks(self, count: int) -> None:
        missing = count - self._trailing_breaks
        if missing > 0:
            self._parts.append("\n" * missing)
            self._trailing_breaks = count
        self._last = "\n"

    def result(self) -> str:
        text = re.sub(r"[ \t]+\n", "\n", "".join(self._parts))
        return re.sub(r"\n{3,}", "\n\n", text).strip("\n").rstrip()


def html_to_text(html: str) -> str:
    """Readable text of an HTML page: title first, then the body with block structure as line
    breaks; scripts, styles, navigation and page chrome left out."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = _SPACES.sub(" ", soup.title.get_text()).strip() if soup.title else ""
    body = _body_text(soup)
    if title and not body.startswith(title):
        return f"{title}\n\n{body}" if body else title
    return body


def _body_text(root: Any) -> str:
    from bs4.element import NavigableString, PreformattedString, Tag

    out = PlainText()
    # An explicit stack rather than recursion: user HTML can nest thousands of levels deep.
    # Entries are (node, inside <pre>) to visit, or a tag name whose end has been reached.
    stack: list[tuple[Any, bool] | str] = [(root, False)]
    while stack:
        entry = stack.pop()
        if isinstance(entry, str):
            _close(out, entry)
            continue
        node, preformatted = entry
        if isinstance(node, PreformattedString):  # comments, doctypes, CDATA, processing instructions
            continue
        if isinstance(node, NavigableString):
            out.text(str(node), preformatted)
            continue
        if not isinstance(node, Tag) or node.name in DROPPED_TAGS or node.has_attr("hidden"):
            continue
        _open(out, node.name)
        stack.append(node.name)
        inner = preformatted or node.name in ("pre", "textarea")
        stack.extend((child, inner) for child in reversed(node.contents))
    return out.result()


def _open(out: PlainText, name: str) -> None:
    if name == "br":
        out.breaks(1)
    elif name in PARAGRAPH_TAGS:
        out.breaks(2)
    elif name in LINE_TAGS:
        out.breaks(1)
    if name == "li":
        out.text("- ", preformatted=True)


def _close(out: PlainText, name: str) -> None:
    if name in PARAGRAPH_TAGS:
        out.breaks(2)
    elif name in LINE_TAGS:
        out.breaks(1)
    elif name in CELL_TAGS:
        out.text(" ", preformatted=False)


def pdf_to_text(data: bytes, where: str = "") -> str:
    """Page texts joined by blank lines; a page that fails is skipped if others have text."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
    except Exception as exc:  # pypdf raises a zoo of types on malformed input; all mean "unreadable"
        raise BadRequest(f"could not read PDF{where}: {_pdf_reason(exc, data)}") from exc
    try:
        # Many PDFs are "encrypted" only to set permissions, with an empty user password.
        if reader.is_encrypted and not reader.decrypt(""):
            raise BadRequest(f"could not read PDF{where}: it is encrypted with a password")
        pages = list(reader.pages)
    except BadRequest:
        raise
    except Exception as exc:  # see above; for an encrypted file, often a missing AES library
        prefix = "it is encrypted and cannot be opened: " if _encrypted(reader) else ""
        raise BadRequest(f"could not read PDF{where}: {prefix}{_pdf_reason(exc, data)}") from exc
    texts: list[str] = []
    failure: Exception | None = None
    for page in pages:
        try:
            texts.append((page.extract_text() or "").strip())
        except Exception as exc:  # see above
            failure = failure or exc
    text = "\n\n".join(t for t in texts if t)
    if not text and failure is not None:
        raise BadRequest(f"could not read PDF{where}: {_pdf_reason(failure, data)}") from failure
    if not text:
        raise BadRequest(f"the PDF{where} has no extractable text (is it scanned? OCR it first)")
    return text


def _encrypted(reader: Any) -> bool:
    try:
        return bool(reader.is_encrypted)
    except Exception:  # a trailer too broken to say
        return False


def _pdf_reason(exc: Exception, data: bytes) -> str:
    reason = f"{type(exc).__name__}: {exc}"
    # The usual cause: a login or error page served where the PDF should be.
    if sniff(data) == "text/html":
        reason += " (the data is an HTML page, not a PDF)"
    return reason


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
