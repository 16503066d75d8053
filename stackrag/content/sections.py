"""The structure of Markdown and reStructuredText sources: section headings and the blocks between them.

A block is a paragraph, a list, a table or a code block (Markdown fences, reST literal blocks after
`::` and directives such as `.. code-block::`), which the splitter never cuts unless it alone is
larger than a window. Markdown is read by a CommonMark parser (markdown-it-py: `~~~` and backtick
fences, setext headings, lists and HTML blocks as CommonMark defines them); reST by the rules
below. Plain text has no headings: it is one run of paragraphs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKUPS = ("markdown", "rst")
_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:._!$%&,/;<>?@\\|])\1{2,}\s*$")
_RST_DIRECTIVE = re.compile(r"^\.\.\s+[\w:-]+::")


@dataclass
class Block:
    start: int  # character offsets into the text
    end: int
    section: str  # the heading path in effect, "A > B"; "" before the first heading
    heading: bool = False  # this block is a heading line: a section starts here


def markup_of(mime_type: str | None, name: str | None) -> str | None:
    mime = (mime_type or "").split(";")[0].strip().lower()
    lowered = (name or "").lower()
    if mime in ("text/markdown", "text/x-markdown") or lowered.endswith((".md", ".markdown")):
        return "markdown"
    if mime in ("text/x-rst", "text/prs.fallenstein.rst") or lowered.endswith(".rst"):
        return "rst"
    return None


def _lines(text: str) -> list[tuple[int, str]]:
    out, offset = [], 0
    for line in text.splitlines(keepends=True):
        out.append((offset, line.rstrip("\r\n")))
        offset += len(line)
    return out


def _markdown_blocks(text: str) -> list[Block]:
    from .markdown import parser

    lines = _lines(text)
    if not lines:
        return []
    starts = [offset for offset, _ in lines] + [len(text)]

    def span(first: int, last: int) -> tuple[int, int]:
        last = min(last, len(lines))
        return starts[first], lines[last - 1][0] + len(lines[last - 1][1])

    result: list[Block] = []
    path: list[tuple[int, str]] = []
    tokens = parser().parse(text)
    for i, token in enumerate(tokens):
        if token.level != 0 or token.map is None or token.nesting == -1:
            continue
        start, end = span(*token.map)
        if token.type == "heading_open":
            title = tokens[i + 1].content.strip() if i + 1 < len(tokens) else ""
            level = int(token.tag[1])
            while path and path[-1][0] >= level:
                path.pop()
            if title:
                path.append((level, title))
            result.append(Block(start, end, " > ".join(t for _, t in path), heading=True))
        elif text[start:end].strip():
            result.append(Block(start, end, " > ".join(t for _, t in path)))
    return result


def blocks(text: str, markup: str | None) -> list[Block]:
    """Blocks in document order, each knowing the section it belongs to."""
    if markup == "markdown":
        return _markdown_blocks(text)
    lines = _lines(text)
    result: list[Block] = []
    path: list[tuple[int, str]] = []  # (level, title) of the open headings
    rst_levels: list[str] = []  # reST heading levels are the adornment styles in order of appearance
    start: int | None = None
    end = 0
    literal_indent = False  # reST: the block continues while lines are indented
    i = 0

    def section() -> str:
        return " > ".join(title for _, title in path)

    def close() -> None:
        nonlocal start
        if start is not None and text[start:end].strip():
            result.append(Block(start, end, section()))
        start = None

    def open_heading(level: int, title: str, first: int, last: int) -> None:
        close()
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title.strip()))
        result.append(Block(first, last, section(), heading=True))

    while i < len(lines):
        offset, line = lines[i]
        line_end = offset + len(line)
        stripped = line.strip()
        if markup == "rst" and not literal_indent:
            nxt = lines[i + 1][1] if i + 1 < len(lines) else ""
            over = _RST_ADORNMENT.match(line)
            if over and i + 2 < len(lines) and stripped and _RST_ADORNMENT.match(lines[i + 2][1]) and lines[i + 1][1].strip():
                style = "over" + line.strip()[0]
                level = _rst_level(rst_levels, style)
                open_heading(level, lines[i + 1][1], offset, lines[i + 2][0] + len(lines[i + 2][1]))
                i += 3
                continue
            if stripped and not over and not stripped.startswith("..") and _RST_ADORNMENT.match(nxt) \
                    and len(nxt.strip()) >= min(len(stripped), 3) and start is None:
                level = _rst_level(rst_levels, nxt.strip()[0])
                open_heading(level, stripped, offset, lines[i + 1][0] + len(nxt))
                i += 2
                continue
        if literal_indent:
            if not stripped or line[:1] in (" ", "\t"):
                if stripped:
                    end = line_end
                i += 1
                continue
            literal_indent = False
            close()
            continue  # this line is read afresh: it may be a heading
        if not stripped:
            close()
            i += 1
            continue
        if start is None:
            start = offset
        end = line_end
        if markup == "rst" and (stripped.endswith("::") or _RST_DIRECTIVE.match(stripped)):
            # The indented body that follows (code, a note, a table) belongs to this block.
            literal_indent = True
        i += 1
    close()
    return result


def _rst_level(seen: list[str], style: str) -> int:
    if style not in seen:
        seen.append(style)
    return seen.index(style) + 1


def section_at(found: list[Block], offset: int) -> str:
    """The section in effect at a character offset."""
    current = ""
    for block in found:
        if block.start > offset:
            break
        current = block.section
    return current
