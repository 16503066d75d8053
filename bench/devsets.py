"""The retrieval dev sets: torchtune's reST docs from ../shared, and the sets kept in eval/<set>/
(documents fetched by eval/fetch.py into a cache outside git). Each is a corpus folder, its
answerable questions and its unanswerable ones, in stackrag.eval's JSONL format."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from common import ROOT

sys.path.insert(0, str(ROOT))

from stackrag.cli.evaluation import Question, load_questions  # noqa: E402


@dataclass
class DevSet:
    name: str
    format: str
    corpus: Path
    questions: list[Question]
    unanswerable: list[Question]


def _fetch_module():
    spec = importlib.util.spec_from_file_location("stackrag_eval_fetch", ROOT / "eval" / "fetch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def set_names() -> list[str]:
    return ["torchtune", *sorted(p.parent.name for p in (ROOT / "eval").glob("*/source.json"))]


def load(names: list[str], shared: Path, cache: Path | None = None) -> list[DevSet]:
    """The named sets, fetching documents that are not in the cache yet; every relevant document a
    question names must be in its corpus (a typo would silently score as a miss)."""
    fetch = _fetch_module()
    sources = fetch.dev_sets()
    cache = cache or fetch.default_cache()
    sets = []
    for name in names:
        if name == "torchtune":
            devset = DevSet(name, "rst", shared / "corpus" / "torchtune-docs",
                            load_questions(shared / "eval" / "torchtune_dev.jsonl"),
                            load_questions(shared / "eval" / "torchtune_dev_unanswerable.jsonl"))
        else:
            source = sources[name]
            devset = DevSet(name, source.source["format"], fetch.fetch(source, cache),
                            load_questions(source.questions()), load_questions(source.unanswerable()))
        missing = sorted({d for q in devset.questions for d in q.relevant if not (devset.corpus / d).is_file()})
        if missing:
            raise SystemExit(f"{name}: relevant documents not in {devset.corpus}: {', '.join(missing[:5])}")
        sets.append(devset)
    return sets
