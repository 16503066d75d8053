"""A pytest plugin the conformance run loads into Llama Stack's harness (-p timeouts): client
timeouts of at least CONFORMANCE_TIMEOUT seconds (600 by default). The harness's are made for
hosted models (60 s, some 30 s); a 0.5B model on two shared cores can take longer to answer one turn.
It changes nothing else."""

from __future__ import annotations

import functools
import os

MINIMUM = float(os.environ.get("CONFORMANCE_TIMEOUT", "600"))


def _at_least(cls: type) -> None:
    original = cls.__init__

    @functools.wraps(original)
    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        timeout = kwargs.get("timeout")
        if not isinstance(timeout, (int, float)) or timeout < MINIMUM:
            kwargs["timeout"] = MINIMUM
        original(self, *args, **kwargs)

    cls.__init__ = init  # type: ignore[method-assign]


def pytest_configure(config):  # type: ignore[no-untyped-def]
    import llama_stack_client
    import openai

    for cls in (llama_stack_client.LlamaStackClient, llama_stack_client.AsyncLlamaStackClient,
                openai.OpenAI, openai.AsyncOpenAI):
        _at_least(cls)
