"""HTML extractors side by side on the cmake dev set's pages (issue 16): speed, how much of each
question's evidence survives, and how much page chrome is left.

  - walker-old: the extractor before issue 16 (every element's text, <nav>/<header>/<footer>
    dropped), from git (`--old-ref`, default c519ef0, the branch point);
  - walker: content/html.py (main content as Markdown);
  - trafilatura: trafilatura.extract(..., output_format="markdown"), when it imports (it is not a
    dependency: run this with an interpreter that has it, e.g. a venv of its own, PYTHONPATH=.).

Evidence survives when its words, lower-cased and with white space collapsed, occur in the page's
text; chrome is counted as occurrences of strings that only navigation holds. Prints JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROME = ("¶", "Quick search", "Previous topic", "Next topic", "Show Source", "Navigation", "© Copyright",
          "Table of Contents")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[`*#]", "", text)).strip().lower()


def old_walker(ref: str):
    """html_to_text of an older commit, loaded from git into a temporary module."""
    source = subprocess.run(["git", "show", f"{ref}:stackrag/content/documents.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    start = source.index("# Elements whose text is never part")
    end = source.index("def pdf_to_text(")
    code = "from __future__ import annotations\nimport re\nfrom typing import Any\n" + source[start:end]
    path = Path(tempfile.mkdtemp()) / "old_html.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("old_html", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda data: module.html_to_text(data.decode("utf-8", errors="replace"))


def extractors(old_ref: str) -> dict:
    from stackrag.content.html import html_to_text

    found = {"walker-old": old_walker(old_ref), "walker": html_to_text}
    try:
        import trafilatura

        found["trafilatura"] = lambda data: trafilatura.extract(
            data.decode("utf-8", errors="replace"), output_format="markdown", include_tables=True,
            include_links=False, favor_recall=True) or ""
    except ImportError:
        print("trafilatura is not importable here: skipped", file=sys.stderr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path.home() / ".cache" / "stackrag" / "devsets" / "cmake")
    parser.add_argument("--old-ref", default="c519ef0")
    args = parser.parse_args()
    pages = {p.relative_to(args.corpus).as_posix(): p.read_bytes() for p in sorted(args.corpus.rglob("*.html"))}
    questions = [json.loads(line) for line in (ROOT / "eval" / "cmake" / "dev.jsonl").read_text().splitlines() if line]
    result = {"pages": len(pages), "questions": len(questions), "extractors": {}}
    for name, extract in extractors(args.old_ref).items():
        started = time.perf_counter()
        texts = {doc: extract(data) for doc, data in pages.items()}
        seconds = time.perf_counter() - started
        normalised = {doc: _norm(t) for doc, t in texts.items()}
        kept = [q["id"] for q in questions if _norm(q["evidence"]) in normalised[q["relevant"][0]]]
        result["extractors"][name] = {
            "pages_per_s": round(len(pages) / seconds, 1),
            "evidence_kept": f"{len(kept)} of {len(questions)}",
            "evidence_lost": sorted({q["id"] for q in questions} - set(kept)),
            "chrome": {c: sum(t.count(c) for t in texts.values()) for c in CHROME},
            "characters": sum(len(t) for t in texts.values()),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
