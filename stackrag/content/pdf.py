"""PDF documents as text: pages extracted by pypdf, then cleaned of what typesetting adds.

What a PDF's text layer holds is the page as printed, not the text as written:
  - ligature glyphs (U+FB00-FB06: "deﬁned") and other compatibility characters: NFKC;
  - running heads and page numbers, repeated at the top or bottom of page after page: a first or
    last line that recurs (digits aside) on two or more pages is dropped;
  - margin line numbers (lineno, code listings) glued to the line's last or first word
    ("some1", "fea-2"): a page whose lines end (or start) in numbers that count up by one is
    read without them;
  - words hyphenated at a line end ("op-\\nposed"): joined, unless the document itself writes
    the hyphenated form elsewhere and never the joined one ("well-\\nknown").
Sections come from the PDF's outline (bookmarks), when it has one: a line on the bookmark's page
that reads as the bookmark's title becomes a Markdown heading, so chunks know their section path.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from collections import Counter
from typing import Any

from ..errors import BadRequest

_DIGITS = re.compile(r"\d+")
_TRAILING_NUMBER = re.compile(r"(?<=\S)(\d{1,4})\s*$")
_LEADING_NUMBER = re.compile(r"^\s*(\d{1,4})(?=\S)")
_HYPHENATED = re.compile(r"([^\W\d_]+)-\n([^\W\d_]+)(\S*)[ \t]?")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
_SECTION_NUMBER = re.compile(r"^(?:[A-Z]|\d+)(?:\.\d+)*\.?\s+")
_SPACES = re.compile(r"\s+")
# Margin numbers are trusted only when this many lines of a page, and this share of them, count up.
MIN_NUMBERED_LINES = 5
MIN_NUMBERED_SHARE = 0.6


def pdf_to_text(data: bytes, where: str = "") -> str:
    """The document's text, cleaned (module docstring); page breaks are blank lines."""
    from pypdf import PdfReader

    # pypdf logs a warning for every odd font program (hundreds per LaTeX manual); they change nothing.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
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
            texts.append(unicodedata.normalize("NFKC", page.extract_text() or "").strip())
        except Exception as exc:  # see above
            failure = failure or exc
            texts.append("")
    if not any(texts) and failure is not None:
        raise BadRequest(f"could not read PDF{where}: {_pdf_reason(failure, data)}") from failure
    if not any(texts):
        raise BadRequest(f"the PDF{where} has no extractable text (is it scanned? OCR it first)")
    page_lines = [_without_margin_numbers(t.split("\n")) for t in texts]
    page_lines = _without_running_heads(page_lines)
    _mark_headings(page_lines, _outline(reader))
    text = "\n\n".join("\n".join(lines).strip() for lines in page_lines if any(l.strip() for l in lines))
    text = _dehyphenate(text)
    title = _title(reader)
    if title and not text.startswith("#") and _norm(title) not in _norm(text[:500]):
        text = f"# {title}\n\n{text}"
    return text


def _without_margin_numbers(lines: list[str]) -> list[str]:
    for pattern in (_TRAILING_NUMBER, _LEADING_NUMBER):
        found = [(i, int(m.group(1))) for i, line in enumerate(lines) if (m := pattern.search(line))]
        counting = set()
        for (i, n), (j, m) in zip(found, found[1:]):
            if m == n + 1:
                counting.update((i, j))
        content = sum(1 for line in lines if line.strip())
        if len(counting) >= MIN_NUMBERED_LINES and len(counting) >= MIN_NUMBERED_SHARE * content:
            lines = [pattern.sub("", line) if i in counting else line for i, line in enumerate(lines)]
    return lines


def _edge_key(line: str) -> str:
    return _DIGITS.sub("#", _SPACES.sub(" ", line.strip().lower()))


def _without_running_heads(pages: list[list[str]]) -> list[list[str]]:
    if len(pages) < 3:
        return pages
    edges: Counter[tuple[str, str]] = Counter()
    for lines in pages:
        content = [line for line in lines if line.strip()]
        for where, line in (("top", content[:1]), ("bottom", content[-1:])):
            for one in line:
                edges[(where, _edge_key(one))] += 1
    repeated = {key for key, count in edges.items() if count >= 2}
    out = []
    for lines in pages:
        lines = list(lines)
        for where, index in (("top", 0), ("bottom", -1)):
            content = [i for i, line in enumerate(lines) if line.strip()]
            if content and (where, _edge_key(lines[content[index]])) in repeated:
                del lines[content[index]]
        out.append(lines)
    return out


def _norm(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def _outline(reader: Any) -> list[tuple[int, str, int]]:
    """(depth, title, page index) of every bookmark; [] when there is none or it is unreadable."""
    found: list[tuple[int, str, int]] = []

    def walk(items: list[Any], depth: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
                title = str(item.title or "")
            except Exception:  # a bookmark to nowhere: skip it
                continue
            if isinstance(page, int) and title:
                found.append((depth, title, page))

    try:
        walk(reader.outline, 0)
    except Exception:  # a broken outline is no outline
        return []
    return found


def _mark_headings(pages: list[list[str]], outline: list[tuple[int, str, int]]) -> None:
    for depth, title, page in outline:
        wanted = _norm(title)
        if not wanted or not 0 <= page < len(pages):
            continue
        for i, line in enumerate(pages[page]):
            if line.startswith("#"):
                continue
            plain = _norm(line)
            if plain == wanted or _norm(_SECTION_NUMBER.sub("", line.strip())) == wanted:
                pages[page][i] = "#" * min(depth + 2, 6) + " " + line.strip()
                break


def _dehyphenate(text: str) -> str:
    words = Counter(w.lower() for w in _WORD.findall(text))

    def join(match: re.Match[str]) -> str:
        first, second, rest = match.groups()
        joined = first + second
        if words[f"{first}-{second}".lower()] and not words[joined.lower()]:
            return f"{first}-{second}{rest}\n"
        return f"{joined}{rest}\n"

    return _HYPHENATED.sub(join, text)


def _title(reader: Any) -> str:
    try:
        title = str((reader.metadata or {}).get("/Title") or "").strip()
    except Exception:  # unreadable metadata: no title
        return ""
    if not title or title.lower().endswith((".dvi", ".tex", ".pdf", ".doc", ".docx")):
        return ""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", title))


def _encrypted(reader: Any) -> bool:
    try:
        return bool(reader.is_encrypted)
    except Exception:  # a trailer too broken to say
        return False


def _pdf_reason(exc: Exception, data: bytes) -> str:
    reason = f"{type(exc).__name__}: {exc}"
    # The usual cause: a login or error page served where the PDF should be.
    head = data[:1024].removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        reason += " (the data is an HTML page, not a PDF)"
    return reason
