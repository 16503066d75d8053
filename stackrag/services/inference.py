"""One model call as the agent loop and the inference routes need it: streamed text deltas, then
the final message with tool calls (native or parsed from text) and a Llama Stack stop_reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ..errors import BadRequest
from ..providers.protocols import ChatModel, ChatRequest, StructuredOutput
from ..wire.llama_stack import GreedyStrategy, SamplingParams, TopPStrategy
from ..wire.response_format import (GrammarFormat, JsonObjectFormat, JsonSchemaFormat, JsonSchemaSpec,
                                    LlamaJsonSchemaFormat, TextFormat)
from .messages import looks_like_tool_call, parse_text_tool_calls, tool_call

# Room kept free for the answer when the caller does not say how long it may be.
DEFAULT_ANSWER_TOKENS = 768


@dataclass
class Sampling:
    temperature: float = 0.0
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None

    @classmethod
    def of(cls, params: SamplingParams | None) -> Sampling:
        """Llama Stack SamplingParams: {strategy: {type: greedy|top_p|top_k, ...}, max_tokens (0: the
        default), stop}."""
        params = params or SamplingParams()
        strategy = params.strategy or GreedyStrategy()
        max_tokens = params.max_tokens or None
        if isinstance(strategy, GreedyStrategy):
            return cls(0.0, None, max_tokens, params.stop)
        if isinstance(strategy, TopPStrategy):
            return cls(strategy.temperature or 0.7, strategy.top_p or 0.95, max_tokens, params.stop)
        return cls(0.7, None, max_tokens, params.stop)  # top_k: llama.cpp and OpenAI APIs sample by temperature


def structured_output(response_format: Any) -> StructuredOutput | None:
    """What the answer must be, from any API's response_format (None: plain text)."""
    if response_format is None or isinstance(response_format, TextFormat):
        return None
    if isinstance(response_format, JsonObjectFormat):
        return StructuredOutput()
    if isinstance(response_format, LlamaJsonSchemaFormat):
        return StructuredOutput(schema=response_format.json_schema)
    if isinstance(response_format, GrammarFormat):
        # A caller's GBNF goes to llama.cpp's native parser as is, where a malformed or hostile
        # grammar can abort the model's process; a JSON schema is bounded and converted here.
        raise BadRequest("response_format type 'grammar' is not supported; describe the answer with "
                         "{'type': 'json_schema', 'json_schema': {...}} instead")
    spec = response_format.json_schema if isinstance(response_format, JsonSchemaFormat) else response_format
    assert isinstance(spec, JsonSchemaSpec)
    return StructuredOutput(schema=spec.schema_, name=spec.name, description=spec.description, strict=spec.strict)


def with_format_hint(messages: list[dict[str, Any]], structured: StructuredOutput | None) -> list[dict[str, Any]]:
    """The messages with the format said in words too, in the leading system message. A grammar
    only forbids what does not fit: a small model held to a schema whose properties are optional
    writes `{}`; told the schema, it fills it (and OpenAI's json_object wants "JSON" said anyway)."""
    if structured is None:
        return messages
    hint = "Answer with one JSON object only."
    if structured.schema is not None:
        hint = f"Answer with one JSON object only, following this JSON schema: {json.dumps(structured.schema)}"
    first = messages[0] if messages else {}
    if first.get("role") == "system" and isinstance(first.get("content"), str):
        return [{**first, "content": f"{first['content']}\n\n{hint}"}] + messages[1:]
    return [{"role": "system", "content": hint}] + messages


@dataclass
class Delta:
    text: str


@dataclass
class Completion:
    text: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_of_turn"

    def message(self) -> dict[str, Any]:
        """A Llama Stack CompletionMessage."""
        return {"role": "assistant", "content": self.text, "stop_reason": self.stop_reason,
                "tool_calls": self.tool_calls}


async def answer_budget(model: ChatModel, messages: list[dict[str, Any]], wanted: int | None) -> int:
    """How many tokens the answer may take; a prompt that leaves no room is refused, never sent."""
    used = await model.count_tokens(messages)
    room = model.context_window - used - 16
    if room < 32:
        raise BadRequest(
            f"the prompt takes {used} of the model's {model.context_window} tokens of context; shorten it"
        )
    return min(wanted or DEFAULT_ANSWER_TOKENS, room)


async def generate(
    model: ChatModel,
    messages: list[dict[str, Any]],
    sampling: Sampling,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
    api_key: str | None = None,
    structured: StructuredOutput | None = None,
) -> AsyncIterator[Delta | Completion]:
    """Yield text deltas as they come and the Completion last.

    When tools are offered, text that starts like a tool call is held back until the end, so a
    call written as JSON text is never shown to the user as an answer.
    """
    tool_names = {t["function"]["name"] for t in tools or []}
    messages = with_format_hint(messages, structured)
    request = ChatRequest(
        messages=messages,
        tools=tools or None,
        tool_choice=tool_choice,
        max_tokens=await answer_budget(model, messages, sampling.max_tokens),
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        stop=sampling.stop,
        structured=structured,
        api_key=api_key,
    )
    text = ""
    shown = 0
    native_calls: list[dict[str, Any]] = []
    finish = None
    async for chunk in model.stream_chat(request):
        text += chunk.text
        if chunk.tool_calls:
            native_calls = chunk.tool_calls
        finish = chunk.finish_reason or finish
        if tool_names and (len(text.strip()) < 12 or looks_like_tool_call(text)):
            continue
        if len(text) > shown:
            yield Delta(text[shown:])
            shown = len(text)
    calls = [tool_call(c["name"], _arguments(c["arguments"]), c.get("id") or None) for c in native_calls]
    if not calls and tool_names:
        calls = parse_text_tool_calls(text, tool_names)
    if calls:
        text = ""
    elif len(text) > shown:
        yield Delta(text[shown:])
    stop = "out_of_tokens" if finish == "length" else "end_of_turn"
    yield Completion(text=text.strip() if not calls else "", tool_calls=calls, stop_reason=stop)


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


async def answer_text(model: ChatModel, messages: list[dict[str, Any]], sampling: Sampling) -> str:
    """A whole answer as one line of text (a chunk's context, a search query)."""
    text = ""
    async for part in generate(model, messages, sampling):
        if isinstance(part, Completion):
            text = part.text
    return " ".join(text.split())
