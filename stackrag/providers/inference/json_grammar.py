"""The grammar that holds the local model to a response_format (run in the model's own process).

llama-cpp-python turns `response_format={"type": "json_object", "schema": ...}` into a grammar
itself, but when the schema cannot be converted it quietly falls back to "any JSON", and a grammar
that llama.cpp cannot parse leaves a NULL sampler in the chain, which crashes the process at the
first token. So the grammar is built here: a schema that cannot be followed is refused (a 400 that
says why), and the grammar is parsed by llama.cpp once before any generation uses it.
"""

from __future__ import annotations

import json
from typing import Any

# A grammar this long comes only from a schema at every bound at once; llama.cpp parses and walks
# it at each token.
MAX_GRAMMAR_CHARS = 200_000


class GrammarError(ValueError):
    """The response_format cannot be followed by the local model; the message says why."""


def grammar_for(response_format: Any, vocab: Any) -> Any:
    """The LlamaGrammar for an OpenAI response_format, or None for plain text; raises GrammarError."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise GrammarError("response_format must be an object")
    kind = response_format.get("type")
    if kind == "text":
        return None
    from llama_cpp import llama_grammar

    if kind == "json_object":
        return _parsed(llama_grammar.JSON_GBNF, vocab)
    if kind != "json_schema":
        raise GrammarError(f"response_format type {kind!r} is not one of text, json_object, json_schema")
    schema = (response_format.get("json_schema") or {}).get("schema")
    if schema is None:
        return _parsed(llama_grammar.JSON_GBNF, vocab)
    try:
        text = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    except RecursionError:
        raise GrammarError("the schema nests too deeply (or refers to itself too often) to build a grammar") from None
    except Exception as exc:  # the converter says what it cannot follow in assertions and ValueErrors
        raise GrammarError(f"the local model cannot follow this schema: {exc or type(exc).__name__}"[:500]) from None
    if len(text) > MAX_GRAMMAR_CHARS:
        raise GrammarError(f"the schema makes a grammar of {len(text)} characters, more than the "
                           f"{MAX_GRAMMAR_CHARS} the local model takes; simplify it")
    return _parsed(text, vocab)


def _parsed(text: str, vocab: Any) -> Any:
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
    if not sampler:
        raise GrammarError("llama.cpp could not parse the grammar made from this schema; simplify it")
    llama_cpp.llama_sampler_free(sampler)
    return LlamaGrammar.from_string(text, verbose=False)
