"""Llama Stack chat messages and tools <-> the OpenAI format that inference providers speak, and
reading tool calls that small models write as JSON text instead of native tool_calls."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from ..errors import BadRequest
from ..content.text import content_as_text

ROLES = ("system", "user", "assistant", "tool", "ipython")


def tool_call(name: str, arguments: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    """A Llama Stack ToolCall."""
    return {
        "call_id": call_id or f"call_{uuid.uuid4().hex[:12]}",
        "tool_name": name,
        "arguments": arguments,
        "arguments_json": json.dumps(arguments),
    }


def to_openai(message: dict[str, Any], field: str) -> dict[str, Any]:
    role = message.get("role")
    if role not in ROLES:
        raise BadRequest(f"{field}.role must be one of {', '.join(ROLES)}, not {role!r}")
    text = content_as_text(message.get("content"), f"{field}.content", sep="\n")
    if role in ("tool", "ipython"):
        return {"role": "tool", "tool_call_id": str(message.get("call_id") or ""), "content": text}
    if role == "assistant" and message.get("tool_calls"):
        return {
            "role": "assistant",
            "content": text or None,
            "tool_calls": [
                {
                    "id": call.get("call_id") or "",
                    "type": "function",
                    "function": {
                        "name": call.get("tool_name") or "",
                        "arguments": call.get("arguments_json") or json.dumps(call.get("arguments") or {}),
                    },
                }
                for call in message["tool_calls"]
            ],
        }
    return {"role": role, "content": text}


def tool_definition_to_openai(tool: dict[str, Any]) -> dict[str, Any]:
    """A Llama Stack ToolDefinition ({tool_name, description, parameters: {name: ParamDefinition}})."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in (tool.get("parameters") or {}).items():
        properties[name] = {"type": _json_type(param.get("param_type", "string")),
                            "description": param.get("description") or ""}
        if param.get("required", True):
            required.append(name)
    name = tool.get("tool_name")
    if isinstance(name, dict):  # BuiltinTool enum serialised as an object by some clients
        name = name.get("value")
    return {
        "type": "function",
        "function": {
            "name": str(name),
            "description": tool.get("description") or "",
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def _json_type(param_type: str) -> str:
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array",
            "dict": "object"}.get(param_type, param_type)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def parse_text_tool_calls(text: str, tool_names: set[str]) -> list[dict[str, Any]]:
    """Tool calls a model wrote as text: `{"name": ..., "arguments": {...}}`, bare or inside
    <tool_call> tags or ``` fences (Qwen and other small models do this under tool_choice auto)."""
    candidates = [m.group(1) for m in _TAG.finditer(text)] + [m.group(1) for m in _FENCE.finditer(text)]
    candidates.append(text)
    calls: list[dict[str, Any]] = []
    for candidate in candidates:
        for obj in _json_objects(candidate):
            name = obj.get("name") or obj.get("function") or obj.get("tool_name")
            args = obj.get("arguments", obj.get("parameters", {}))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    continue
            if isinstance(name, str) and name in tool_names and isinstance(args, dict):
                calls.append(tool_call(name, args))
        if calls:
            return calls
    return []


def _json_objects(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    found = []
    index = text.find("{")
    while index != -1:
        try:
            obj, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        index = text.find("{", end)
    return found


def looks_like_tool_call(text: str) -> bool:
    """Whether streamed text may be the start of a textual tool call (then it is held back)."""
    head = text.lstrip()[:12]
    return head.startswith(("{", "<tool_call>", "```", "[{")) or (head and "<tool_call>".startswith(head))
