"""Structured output: the `response_format` shapes of the three APIs, and the bounds on their JSON
schema.

A schema becomes a grammar (the local llama.cpp model) or a provider's decoding constraint, and
schema-to-grammar converters recurse on nesting, copy a rule once per allowed repetition and pair
every optional property with every later one. The bounds below keep a hostile schema from
exhausting them; each refusal says which limit to respect.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, ConfigDict, Field

from .common import Lenient

MAX_SCHEMA_BYTES = 16_384
# Nesting of the schema as JSON (an object property adds two levels: "properties", then the name).
MAX_SCHEMA_DEPTH = 32
# minLength/maxLength/minItems/maxItems and {m,n} in patterns: a grammar holds one copy per repetition.
MAX_REPETITIONS = 500
MAX_PROPERTIES = 100
_REPETITION_KEYS = ("minLength", "maxLength", "minItems", "maxItems")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


def _nodes(schema: dict[str, Any]) -> list[tuple[dict[str, Any], str, int]]:
    """Every object in the schema with its path and depth; iterative, so depth is measured, not hit."""
    found, todo = [], [(schema, "schema", 1)]
    while todo:
        node, path, depth = todo.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise ValueError(f"nests deeper than {MAX_SCHEMA_DEPTH} levels (at {path[:100]}...); flatten the schema")
        if isinstance(node, dict):
            found.append((node, path, depth))
            todo.extend((v, f"{path}.{k}", depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            todo.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))
    return found


def _check_node(node: dict[str, Any], path: str) -> None:
    for key in _REPETITION_KEYS:
        value = node.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_REPETITIONS:
            raise ValueError(f"{path}.{key} is {value}; at most {MAX_REPETITIONS} is supported")
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        for match in _QUANTIFIER.finditer(pattern):
            counts = [int(n) for n in match.groups() if n]
            if any(n > MAX_REPETITIONS for n in counts):
                raise ValueError(f"{path}.pattern repeats {match.group(0)}; at most {MAX_REPETITIONS} times "
                                 "is supported")
    properties = node.get("properties")
    if isinstance(properties, dict) and len(properties) > MAX_PROPERTIES:
        raise ValueError(f"{path}.properties has {len(properties)} properties; at most {MAX_PROPERTIES} "
                         "per object are supported")
    ref = node.get("$ref")
    # A remote $ref would make the model server fetch a URL named by the caller.
    if isinstance(ref, str) and not ref.startswith("#/"):
        raise ValueError(f"{path}.$ref {ref[:80]!r} is not local; only references into the schema itself "
                         "(\"#/$defs/...\") are supported")


def check_schema(schema: dict[str, Any]) -> dict[str, Any]:
    nodes = _nodes(schema)
    size = len(json.dumps(schema, ensure_ascii=False).encode("utf-8"))
    if size > MAX_SCHEMA_BYTES:
        raise ValueError(f"takes {size} bytes as JSON; at most {MAX_SCHEMA_BYTES} are supported")
    for node, path, _depth in nodes:
        _check_node(node, path)
    return schema


JsonSchema = Annotated[dict[str, Any], AfterValidator(check_schema)]
# OpenAI's rule for a format's name.
FormatName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]


# -- OpenAI chat completions: {"type": "text" | "json_object" | "json_schema", ...} -------------------


class TextFormat(Lenient):
    type: Literal["text"]


class JsonObjectFormat(Lenient):
    type: Literal["json_object"]


class JsonSchemaSpec(Lenient):
    # `schema` would shadow BaseModel.schema; the wire name is kept by the alias.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: FormatName
    description: Annotated[str, Field(max_length=4096)] | None = None
    schema_: Annotated[JsonSchema | None, Field(alias="schema")] = None
    strict: bool | None = None


class JsonSchemaFormat(Lenient):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ChatResponseFormat = Annotated[Union[TextFormat, JsonObjectFormat, JsonSchemaFormat], Field(discriminator="type")]


# -- Llama Stack 0.2 inference and agents: {"type": "json_schema", "json_schema": <the schema>} | grammar --


class LlamaJsonSchemaFormat(Lenient):
    type: Literal["json_schema"]
    json_schema: JsonSchema


class GrammarFormat(Lenient):
    """Accepted as a shape so that its refusal can say why (services/inference.py)."""

    type: Literal["grammar"]
    bnf: dict[str, Any]


LlamaResponseFormat = Annotated[Union[LlamaJsonSchemaFormat, GrammarFormat], Field(discriminator="type")]


# -- Responses: text.format = {"type": "text" | "json_object"} | {"type": "json_schema", name, schema, ...} --


class ResponseJsonSchemaFormat(JsonSchemaSpec):
    type: Literal["json_schema"]


ResponseTextFormat = Annotated[Union[TextFormat, JsonObjectFormat, ResponseJsonSchemaFormat],
                               Field(discriminator="type")]


class ResponseText(Lenient):
    format: ResponseTextFormat | None = None
