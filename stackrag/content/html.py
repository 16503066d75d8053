"""HTML pages as Markdown text: the page's main content only, headings kept as Markdown headings
(so chunks know their section path, content/sections.py), code kept as fenced blocks.

What a reader sees as "the page" is the main content, not the site around it: documentation
generators wrap every page in navigation bars, breadcrumbs, sidebars ("Previous topic", "Quick
search"), footers and permalink marks (Sphinx's "¶" after every heading). Indexed, that chrome
makes every page look alike and puts neighbours' titles into each page's text. The rules here are
the generic ones of HTML itself, not of one generator:
  - the content root is <main>, or the element with role="main", or a page's only <article>;
  - inside it, and everywhere else, <nav>, <aside>, page-level <header>/<footer> (not an article's
    own), the ARIA landmarks navigation/banner/contentinfo/search/complementary, hidden elements,
    and elements whose class or id names them as chrome (sidebar, breadcrumb, navbar, menu, ...)
    are left out (a landmark unless it holds the page's <h1>, a name unless it holds any heading);
  - a link whose whole text is a permalink sign (¶, #, §, 🔗) to an anchor of the same page is
    left out.
"""

from __future__ import annotations

import re
from typing import Any

_SPACES = re.compile(r"\s+")
# Elements whose text is never part of what a reader sees as the document.
DROPPED_TAGS = {"script", "style", "noscript", "template", "nav", "svg", "head", "iframe", "object", "canvas",
                "button", "select", "aside", "form", "input", "textarea", "label"}
# <header>/<footer> of the page (not of an article or section) are site chrome.
PAGE_CHROME_TAGS = {"header", "footer"}
SECTIONING = {"article", "section", "main"}
CHROME_ROLES = {"navigation", "banner", "contentinfo", "search", "complementary", "menu", "menubar", "toolbar"}
# Words of a class or id (split at - and _) that name page chrome in every common generator
# (Sphinx, MkDocs, Docusaurus, Read the Docs, Hugo and WordPress themes).
CHROME_WORDS = {"sidebar", "sphinxsidebar", "sidebarwrapper", "breadcrumb", "breadcrumbs", "navbar", "nav",
                "navigation", "menu", "footer", "related", "searchbox", "skip", "cookie", "cookies", "toc",
                "headerlink", "permalink", "anchorlink", "pagination", "prevnext", "share", "social",
                "edit", "feedback", "banner", "masthead", "topbar"}
PERMALINK_SIGNS = {"¶", "#", "§", "🔗", "⚓", "\uf0c1"}
PARAGRAPH_TAGS = {"p", "pre", "blockquote", "table", "ul", "ol", "dl", "figure", "section", "article", "main",
                  "details", "fieldset", "h1", "h2", "h3", "h4", "h5", "h6"}
LINE_TAGS = {"div", "li", "tr", "dt", "dd", "caption", "figcaption", "summary", "address", "hr", "legend",
             "thead", "tbody", "tfoot", "body", "option"}
CELL_TAGS = {"td", "th"}
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


class MarkdownText:
    """Accumulates text with HTML's whitespace rules (runs of spaces collapse, except in <pre>)."""

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


def html_to_text(html: str | bytes, charset: str | None = None) -> str:
    """The main content of an HTML page as Markdown. Bytes are decoded as `charset` says (the
    server's word), else as the page itself declares (<meta charset>, a BOM), else UTF-8."""
    from bs4 import BeautifulSoup

    if isinstance(html, bytes):
        soup = BeautifulSoup(html, "html.parser", from_encoding=charset)
    else:
        soup = BeautifulSoup(html, "html.parser")
    title = _SPACES.sub(" ", soup.title.get_text()).strip() if soup.title else ""
    root = _content_root(soup)
    body = _markdown(root)
    if title and not body.lstrip().startswith("# "):
        # No <h1> of its own: the page's <title> names it.
        return f"# {title}\n\n{body}" if body else f"# {title}"
    return body


def _content_root(soup: Any) -> Any:
    for found in (soup.find("main"), soup.find(attrs={"role": "main"})):
        if found is not None and found.get_text(strip=True):
            return found
    articles = soup.find_all("article")
    if len(articles) == 1 and articles[0].get_text(strip=True):
        return articles[0]
    return soup.body or soup


def _words(node: Any) -> set[str]:
    names = list(node.get("class") or [])
    if node.get("id"):
        names.append(node["id"])
    return {w for name in names for w in re.split(r"[-_\s]+", str(name).lower()) if w}


def _is_chrome(node: Any, in_section: bool) -> bool:
    name = node.name
    if name in DROPPED_TAGS or node.has_attr("hidden") or node.get("aria-hidden") == "true":
        return True
    style = str(node.get("style") or "").replace(" ", "").lower()
    if "display:none" in style:
        return True
    if name in PAGE_CHROME_TAGS and not in_section:
        return True
    if name in ("body", "html", "main", "article"):
        return False
    role = str(node.get("role") or "").lower()
    if role in CHROME_ROLES:
        return node.find("h1") is None
    if CHROME_WORDS & _words(node):
        # Names are weaker evidence than landmarks: a section whose id comes from its heading
        # ("Related projects" -> id="related-projects") or a wrapper class="has-sidebar" is content.
        return node.find(list(HEADINGS)) is None
    if name == "a":
        href = str(node.get("href") or "")
        if href.startswith("#") and node.get_text(strip=True) in PERMALINK_SIGNS | {""}:
            return True
    return False


def _markdown(root: Any) -> str:
    from bs4.element import NavigableString, PreformattedString, Tag

    out = MarkdownText()
    # An explicit stack rather than recursion: user HTML can nest thousands of levels deep.
    # Entries are (node, inside <pre>, inside an article/section) to visit, or a closing action.
    stack: list[Any] = [(root, False, False)]
    while stack:
        entry = stack.pop()
        if isinstance(entry, str):
            _close(out, entry)
            continue
        if callable(entry):
            entry()
            continue
        node, preformatted, in_section = entry
        if isinstance(node, PreformattedString):  # comments, doctypes, CDATA, processing instructions
            continue
        if isinstance(node, NavigableString):
            out.text(str(node), preformatted)
            continue
        if not isinstance(node, Tag) or (node is not root and _is_chrome(node, in_section)):
            continue
        name = node.name
        if name == "pre" and not preformatted:
            code = node.get_text()
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", code)), default=0))
            out.breaks(2)
            out.text(f"{fence}\n{code.strip(chr(10))}\n{fence}", preformatted=True)
            out.breaks(2)
            continue
        if name in HEADINGS and not preformatted:
            title = _SPACES.sub(" ", "".join(_visible_text(node))).strip()
            if title:
                out.breaks(2)
                out.text("#" * HEADINGS[name] + " " + title, preformatted=True)
                out.breaks(2)
            continue
        _open(out, name)
        stack.append(name)
        inner = preformatted or name == "textarea"
        section = in_section or name in SECTIONING
        stack.extend((child, inner, section) for child in reversed(node.contents))
    return out.result()


def _visible_text(node: Any) -> list[str]:
    """A heading's text without its permalink mark and hidden parts."""
    from bs4.element import NavigableString, PreformattedString, Tag

    parts: list[str] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, PreformattedString):
            continue
        if isinstance(current, NavigableString):
            parts.append(str(current))
        elif isinstance(current, Tag) and (current is node or not _is_chrome(current, True)):
            stack.extend(reversed(current.contents))
    return parts


def _open(out: MarkdownText, name: str) -> None:
    if name == "br":
        out.breaks(1)
    elif name in PARAGRAPH_TAGS:
        out.breaks(2)
    elif name in LINE_TAGS:
        out.breaks(1)
    if name == "li":
        out.text("- ", preformatted=True)


def _close(out: MarkdownText, name: str) -> None:
    if name in PARAGRAPH_TAGS:
        out.breaks(2)
    elif name in LINE_TAGS:
        out.breaks(1)
    elif name in CELL_TAGS:
        out.text(" ", preformatted=False)
