"""What extraction keeps and drops (issue 16): HTML main content, Markdown through a CommonMark
parser, PDF text without what typesetting adds. Pure functions: no server needed."""

from __future__ import annotations

from stackrag.content.documents import extract_document
from stackrag.content.html import html_to_text
from stackrag.content.markdown import clean_markdown
from stackrag.content.pdf import _dehyphenate, _mark_headings, _without_margin_numbers, _without_running_heads
from stackrag.content.sections import blocks

SPHINX_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>add_dependencies &mdash; CMake 3.25 Documentation</title></head>
<body>
<div class="related" role="navigation" aria-label="related navigation"><h3>Navigation</h3><ul>
<li><a href="genindex.html">index</a></li><li><a href="next.html">next</a> |</li></ul></div>
<div class="document"><div class="documentwrapper"><div class="bodywrapper"><div class="body" role="main">
<section id="add-dependencies"><h1>add_dependencies<a class="headerlink" href="#add-dependencies" title="Permalink">¶</a></h1>
<p>Add a dependency between top-level targets.</p>
<section id="related-commands"><h2>Related commands<a class="headerlink" href="#related-commands">¶</a></h2>
<p>See <code>add_custom_target()</code>.</p>
<div class="highlight"><pre>add_dependencies(&lt;target&gt; [&lt;target-dependency&gt;]...)</pre></div>
</section></section></div></div></div>
<div class="sphinxsidebar" role="navigation" aria-label="main navigation"><div class="sphinxsidebarwrapper">
<h4>Previous topic</h4><p><a href="add_definitions.html">add_definitions</a></p>
<div id="searchbox" style="display: none" role="search"><h3>Quick search</h3></div></div></div></div>
<div class="footer" role="contentinfo">&#169; Copyright 2000-2022 Kitware, Inc.</div>
</body></html>"""


def test_html_keeps_the_main_content_and_its_headings() -> None:
    text = html_to_text(SPHINX_PAGE.encode())
    assert text == ("# add_dependencies\n\nAdd a dependency between top-level targets.\n\n## Related commands\n\n"
                    "See add_custom_target().\n\n```\nadd_dependencies(<target> [<target-dependency>]...)\n```")
    for chrome in ("Navigation", "Previous topic", "Quick search", "Copyright", "¶", "next"):
        assert chrome not in text
    # The sections of the page become the chunks' section paths.
    paths = {b.section for b in blocks(text, "markdown")}
    assert "add_dependencies > Related commands" in paths


def test_html_without_landmarks_still_loses_its_chrome() -> None:
    page = ("<html><head><title>Otters</title></head><body><header><a href='/'>Site</a></header>"
            "<div class='breadcrumbs'>Home &gt; Animals</div><article><header><h1>Otters</h1></header>"
            "<p>Otters hold hands while sleeping.</p><footer>Filed under mammals</footer></article>"
            "<div class='has-sidebar'><h2>Kept</h2><p>A wrapper named like chrome that holds a heading.</p></div>"
            "<footer>Site footer</footer></body></html>")
    text = html_to_text(page)
    assert "Site" not in text.replace("Site footer", "") and "Home" not in text and "Site footer" not in text
    # An article's own header and footer are content (the article is the content root here).
    assert text.startswith("# Otters\n\nOtters hold hands while sleeping.")
    assert "Filed under mammals" in text
    assert "# Otters" in html_to_text("<html><head><title>Otters</title></head><body><p>x</p></body></html>")


def test_html_charset_comes_from_the_page_when_the_server_says_none() -> None:
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>Caf\xe9 cr\xe8me</p></body></html>'.encode("latin-1")
    assert html_to_text(page) == "Café crème"
    assert extract_document(page, "text/html").text == "Café crème"
    # The server's charset, when it gives one, wins over the page's.
    assert html_to_text("<p>naïve</p>".encode("utf-8"), "utf-8") == "naïve"


def test_markdown_tilde_fences_setext_headings_and_links() -> None:
    source = ("Guide\n=====\n\nRead [the reference](../cli/reference.md#check) and ![a diagram](img/d.png).\n\n"
              "~~~toml config-example\n```\n# not a heading\n~~~\n\nSetup\n-----\n\nDone[^1].\n\n"
              "## Options { #options }\n\n[the standard][pep 621] applies.\n\n<!-- more -->\n")
    text = clean_markdown(source)
    # The code's own ``` line gets a longer fence around it.
    assert text == ("# Guide\n\nRead the reference and a diagram.\n\n````toml\n```\n# not a heading\n````\n\n"
                    "## Setup\n\nDone.\n\n## Options\n\nthe standard applies.")
    assert "reference.md" not in text and "img/d.png" not in text and "{ #options }" not in text
    assert "config-example" not in text and "more" not in text
    sections = [(b.section, b.heading) for b in blocks(text, "markdown")]
    assert ("Guide > Setup", True) in sections and ("Guide > Options", True) in sections
    # The fence is one block: the "# not a heading" line inside it opens no section.
    assert not any(s.endswith("not a heading") for s, _ in sections)


def test_mkdocs_admonitions_and_tabs_become_titles_and_plain_bodies() -> None:
    source = ('!!! note "Dependencies"\n    Hatch reads `dependencies`.\n\n'
              '=== ":octicons-file-code-16: pyproject.toml"\n\n    ```toml\n    [project]\n    ```\n\n'
              '??? tip\n    === "Dynamic"\n        Set `dynamic`.\n')
    text = clean_markdown(source)
    assert text == ("Dependencies\n\nHatch reads `dependencies`.\n\npyproject.toml\n\n```toml\n[project]\n```\n\n"
                    "Tip\n\nDynamic\n\nSet `dynamic`.")


def test_pdf_margin_numbers_running_heads_and_hyphens() -> None:
    lines = ["mechanism that Stephan used. So we changed some1", "lineno.sty definitions, which offered new fea-2",
             "tures. We sent these files to Stephan3", "hoping he would take them.4", "However, he was short of time.5",
             "Writing an article in 2004, we6"]
    cleaned = _without_margin_numbers(lines)
    assert cleaned[0].endswith("some") and cleaned[1].endswith("fea-") and cleaned[5].endswith("2004, we")
    # Numbers that do not count up are the text's own.
    assert _without_margin_numbers(["version 2", "see page 40", "since 1999"]) == ["version 2", "see page 40", "since 1999"]
    pages = [["1 INTRODUCTION 3", "Text one."], ["1 INTRODUCTION 4", "Text two.", "4"], ["Other", "Text three.", "5"]]
    assert _without_running_heads(pages) == [["Text one."], ["Text two."], ["Other", "Text three."]]
    text = "which offered new fea-\ntures. A well-\nknown, well-known trick; op-\nposed to opposed"
    assert _dehyphenate(text) == "which offered new features.\nA well-known,\nwell-known trick; opposed\nto opposed"
    pages = [["Contents", "3.4 Patching", "The tools in this section"]]
    _mark_headings(pages, [(1, "Patching", 0)])
    assert pages[0][1] == "### 3.4 Patching"
