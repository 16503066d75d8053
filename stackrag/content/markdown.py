"""Markdown sources as the text a reader sees, through a CommonMark parser (markdown-it-py).

Raw Markdown is written for a renderer: link targets (`[check](../../cli/reference.md#check)`),
image paths, HTML comments, fence info strings (`toml config-example`), heading attribute lists
(`{ #anchor }`) and the block syntax of the MkDocs/Python-Markdown extensions most documentation
uses (admonitions `!!! note "Title"`, collapsible `??? tip`, content tabs `=== "pyproject.toml"`,
whose bodies are indented four spaces, which plain CommonMark reads as code). Embedded and
indexed as they are, they put paths and markup words into every passage.

`clean_markdown` keeps what a rendered page shows, still as Markdown: ATX headings (setext ones
become ATX), paragraphs, lists, tables as `a | b` rows, fenced code (its language only), inline
code in backticks, link and image text without their targets. Extension blocks become a title
line (the admonition's title or kind, the tab's label) followed by their body, unindented.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_EXTENSION_BLOCK = re.compile(r"^(?P<indent>[ \t]*)(?P<mark>!!!|\?\?\?\+?|===\+?)[ \t]+(?P<rest>.*?)\s*$")
_QUOTED = re.compile(r'"([^"]*)"')
_ICON = re.compile(r":[a-z0-9]+(?:-[a-z0-9]+)+:")  # :octicons-file-code-16:, :material-apple:
_HEADING_ATTRIBUTES = re.compile(r"^(#{1,6}\s.*?)\s*\{\s*[#.:][^}]*\}\s*$")
_FOOTNOTE_REF = re.compile(r"\[\^[^\]\s]+\](?!:)")
_FOOTNOTE_DEF = re.compile(r"^\[\^[^\]\s]+\]:\s*")
_SNIPPET = re.compile(r"^\s*-{1,2}8<-{1,2}")
# A reference link whose definition is elsewhere (MkDocs keeps them in a shared file) stays as text.
_UNRESOLVED_REFERENCE = re.compile(r"\[([^\]\n]+)\]\[[^\]\n]*\]")
_TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.S)


@lru_cache(maxsize=1)
def parser() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table")


def _unindent_extension_blocks(text: str) -> str:
    """Admonitions and content tabs: the marker line becomes its title, the body loses the four
    spaces of indentation that make it part of the block (nested blocks are reached in turn)."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    fence: str | None = None
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            fence = None if fence == marker else (fence or marker)
        match = None if fence else _EXTENSION_BLOCK.match(line)
        if not match:
            if _SNIPPET.match(line):
                i += 1
                continue
            out.append(line)
            i += 1
            continue
        indent, mark, rest = match.group("indent"), match.group("mark"), match.group("rest")
        quoted = _QUOTED.search(rest)
        if mark.startswith("==="):
            title = quoted.group(1) if quoted else rest
        else:
            kind = rest.split()[0] if rest.split() else ""
            title = quoted.group(1) if quoted else kind.capitalize()
        title = _ICON.sub("", title).strip()
        if title:
            out += [indent + title, ""]
        body_indent = len(indent.expandtabs(4)) + 4
        j = i + 1
        while j < len(lines):
            body = lines[j]
            if body.strip() and len(body.expandtabs(4)) - len(body.expandtabs(4).lstrip()) < body_indent:
                break
            lines[j] = indent + body.expandtabs(4)[body_indent:] if body.strip() else ""
            j += 1
        i += 1  # the body lines (now unindented) are read next, so nested blocks are found too
    return "\n".join(out)


def clean_markdown(text: str) -> str:
    source = _unindent_extension_blocks(text)
    source = "\n".join(_FOOTNOTE_DEF.sub("", _HEADING_ATTRIBUTES.sub(r"\1", line)) for line in source.split("\n"))
    tokens = parser().parse(source)
    return _render(tokens).strip("\n")


def _inline(token: Any) -> str:
    parts: list[str] = []
    for child in token.children or []:
        kind = child.type
        if kind == "text":
            parts.append(_UNRESOLVED_REFERENCE.sub(r"\1", _FOOTNOTE_REF.sub("", child.content)))
        elif kind == "code_inline":
            parts.append(f"`{child.content}`")
        elif kind in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif kind == "image":
            parts.append(child.content or "")
        elif kind == "html_inline":
            continue
    return "".join(parts)


def _fenced(code: str, language: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code.rstrip(chr(10))}\n{fence}\n\n"


def _render(tokens: list[Any]) -> str:
    out: list[str] = []
    lists: list[list[Any]] = []  # [ordered, next number] of the open lists
    row: list[str] | None = None
    cell: list[str] | None = None
    for token in tokens:
        kind = token.type
        depth = "  " * max(len(lists) - 1, 0)
        if kind == "heading_open":
            out.append("#" * int(token.tag[1]) + " ")
        elif kind == "heading_close":
            out.append("\n\n")
        elif kind == "inline":
            text = _inline(token)
            if cell is not None:
                cell.append(text)
            else:
                out.append(text)
        elif kind == "paragraph_close":
            if cell is None:
                out.append("\n" if lists and token.hidden else "\n\n")
        elif kind in ("bullet_list_open", "ordered_list_open"):
            start = int(token.attrGet("start") or 1) if kind == "ordered_list_open" else 0
            lists.append([kind == "ordered_list_open", start])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
            if not lists:
                out.append("\n")
        elif kind == "list_item_open":
            ordered, number = lists[-1]
            out.append(depth + (f"{number}. " if ordered else "- "))
            lists[-1][1] += 1
        elif kind in ("fence", "code_block"):
            language = (token.info or "").split()[0] if kind == "fence" and token.info else ""
            out.append(_fenced(token.content, re.sub(r"[^\w+#.-]", "", language.strip("{}."))))
        elif kind == "html_block":
            shown = _TAG.sub("", token.content).strip()
            if shown:
                out.append(shown + "\n\n")
        elif kind == "tr_open":
            row = []
        elif kind in ("th_open", "td_open"):
            cell = []
        elif kind in ("th_close", "td_close"):
            if row is not None:
                row.append("".join(cell or []).strip())
            cell = None
        elif kind == "tr_close":
            out.append(" | ".join(row or []) + "\n")
            row = None
        elif kind == "table_close":
            out.append("\n")
    text = "".join(out)
    return re.sub(r"\n{3,}", "\n\n", text)
