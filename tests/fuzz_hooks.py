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
