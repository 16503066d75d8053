"""OpenAI-compatible inference: /chat/completions, /completions, /embeddings, /models
(under /v1 and under /v1/openai/v1)."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import Depends, Request

from ...services.inference import Completion, Delta, Sampling, generate, structured_output
from ...services.stack import Stack
from ...content.text import content_as_text
from ...errors import BadRequest
from ...wire.openai import ChatCompletionCreate, ChatMessage, CompletionCreate, EmbeddingCreate
from ..access import READ
from ..deps import get_stack, provider_api_key
from ..sse import sse_response
from .. import routing

router = routing.router()


def _messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(messages):
        message = m.model_dump(exclude_none=True)
        message.update(role="system" if m.role == "developer" else m.role,
                       content=content_as_text(m.content, f"messages[{i}].content", sep="\n"))
        out.append(message)
    return out


def _finish(completion: Completion) -> str:
    if completion.tool_calls:
        return "tool_calls"
    return "length" if completion.stop_reason == "out_of_tokens" else "stop"


def _openai_calls(completion: Completion) -> list[dict[str, Any]]:
    return [{"id": c["call_id"], "type": "function",
             "function": {"name": c["tool_name"], "arguments": c["arguments_json"]}} for c in completion.tool_calls]


@router.post("/chat/completions", openapi_extra=READ)
async def chat_completions(body: ChatCompletionCreate, request: Request, stack: Stack = Depends(get_stack)) -> Any:
    model = stack.models.chat_model(body.model)
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    sampling = Sampling(temperature=body.temperature or 0.0, top_p=body.top_p,
                        max_tokens=body.max_completion_tokens or body.max_tokens, stop=stop)
    messages = _messages(body.messages)
    items = generate(model, messages, sampling, body.tools or None, body.tool_choice if body.tools else None,
                     provider_api_key(request, stack, body.model), structured_output(body.response_format))
    response_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        return sse_response(_chat_chunks(items, response_id, created, body.model), done_sentinel=True)
    completion: Completion | None = None
    async for item in items:
        if isinstance(item, Completion):
            completion = item
    assert completion is not None
    message: dict[str, Any] = {"role": "assistant", "content": completion.text or None}
    if completion.tool_calls:
        message["tool_calls"] = _openai_calls(completion)
    prompt_tokens = await model.count_tokens(messages)
    completion_tokens = await model.count_text(completion.text) if completion.text else 0
    return {
        "id": response_id, "object": "chat.completion", "created": created, "model": body.model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(completion), "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


async def _chat_chunks(items: AsyncIterator[Delta | Completion], response_id: str, created: int,
                       model: str) -> AsyncIterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    yield chunk({"role": "assistant", "content": ""})
    async for item in items:
        if isinstance(item, Delta):
            yield chunk({"content": item.text})
            continue
        if item.tool_calls:
            calls = [{"index": i, **c} for i, c in enumerate(_openai_calls(item))]
            yield chunk({"tool_calls": calls})
        yield chunk({}, _finish(item))


@router.post("/completions", openapi_extra=READ)
async def completions(body: CompletionCreate, stack: Stack = Depends(get_stack)) -> Any:
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise BadRequest("prompt: one prompt per request")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    model = stack.models.chat_model(body.model)
    chunks = model.complete(prompt, body.max_tokens, body.temperature or 0.0)
    response_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def shape(text: str, finish: str | None) -> dict[str, Any]:
        return {"id": response_id, "object": "text_completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}

    if body.stream:
        async def events() -> AsyncIterator[dict[str, Any]]:
            async for c in chunks:
                yield shape(c.text, c.finish_reason)

        return sse_response(events(), done_sentinel=True)
    text, finish = "", None
    async for c in chunks:
        text += c.text
        finish = c.finish_reason or finish
    return shape(text, finish or "stop")


@router.post("/embeddings", openapi_extra=READ)
async def embeddings(body: EmbeddingCreate, stack: Stack = Depends(get_stack)) -> Any:
    if body.dimensions is not None:
        raise BadRequest("dimensions is not supported by this embedding model")
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors = await stack.models.embed(body.model, texts)
    tokens = sum(stack.models.embedder(body.model).tokenizer.count(t) for t in texts)
    return {"object": "list", "model": body.model,
            "data": [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _encode(vector: Any, encoding: str | None) -> Any:
    # The openai SDK asks for base64 by default: little-endian float32 bytes.
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
