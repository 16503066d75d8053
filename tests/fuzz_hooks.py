"""Schemathesis hooks for tests/test_fuzz.py, loaded by the `st` CLI through SCHEMATHESIS_HOOKS.

Random path ids only ever reach the 404 branch. Half the generated cases get the ids of real objects the
test created (a vector DB, a file, a vector store, an agent with a session and a turn, a response, a
conversation), so the fuzzer also drives the code behind an existing object.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

REAL_IDS: dict[str, str] = json.loads(os.environ.get("STACKRAG_FUZZ_IDS", "{}"))


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> st.SearchStrategy:
    if not path_parameters:  # an operation without path parameters
        return st.just(path_parameters)
    known = {name: REAL_IDS[name] for name in path_parameters if name in REAL_IDS}
    if not known:
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, **known}])


# What a hostile client sends where the schema says "a string" or "an object": the shapes that once
# reached a 500 (lone surrogates, control characters, a number where a list of objects goes, ...).
HOSTILE_STRINGS = ["\ud800", "a\udfffb", "id\x00with\x01nul", "\x1f", "{index:>9999999}{chunk.content}"]
HOSTILE_VALUES: list[Any] = [[1], {}, "zz", [{}], ["abc"], 1e308, -1, True, None, [[[]]], {"type": "and", "filters": [1]}]


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every position in a JSON value, the root excluded."""
    found = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append(path + (key,))
            found += _paths(child, path + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found.append(path + (i,))
            found += _paths(child, path + (i,))
    return found


def _replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replaced(copy[head], rest, new)
    return copy


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
    """A third of the bodies get one position replaced by a hostile string or a wrong nested shape."""
    paths = _paths(body) if isinstance(body, (dict, list)) else []
    if not paths:
        return st.just(body)
    hostile = st.tuples(st.sampled_from(paths), st.sampled_from(HOSTILE_STRINGS + HOSTILE_VALUES)).map(
        lambda choice: _replaced(body, choice[0], choice[1]))
    return st.one_of(st.just(body), st.just(body), hostile)
