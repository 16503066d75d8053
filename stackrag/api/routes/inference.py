"""/v1/inference: chat-completion, completion (streaming or not) and embeddings (Llama Stack 0.2.x)."""

from __future__ import annotations

from typing import Any, AsyncIterator

from fastapi import Depends, Request

from ...services.inference import Completion, Delta, Sampling, generate, structured_output
from ...services.messages import to_openai, tool_definition_to_openai
from ...services.stack import Stack
from ...content.text import content_as_text
from ...errors import BadRequest
from ...wire.llama_stack import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ToolConfig,
)
from ..access import READ
from ..deps import get_stack, provider_api_key
from ..sse import sse_response
from .. import routing

router = routing.router()


def _tool_choice(value: str | None, tool_config: ToolConfig | None) -> Any:
    choice = (tool_config.tool_choice if tool_config else None) or value or "auto"
    if choice in ("auto", "required", "none"):
        return choice
    return {"type": "function", "function": {"name": str(choice)}}


@router.post("/v1/inference/chat-completion", openapi_extra=READ)
async def chat_completion(body: ChatCompletionRequest, request: Request, stack: Stack = Depends(get_stack)) -> Any:
    model = stack.models.chat_model(body.model_id)
    messages = [to_openai(m.model_dump(exclude_none=True), f"messages[{i}]") for i, m in enumerate(body.messages)]
    tools = [tool_definition_to_openai(t.model_dump(exclude_none=True)) for t in body.tools or []]
    sampling = Sampling.of(body.sampling_params)
    api_key = provider_api_key(request, stack, body.model_id)
    items = generate(model, messages, sampling, tools or None, _tool_choice(body.tool_choice, body.tool_config) if tools else None,
                     api_key, structured_output(body.response_format))
    if body.stream:
        return sse_response(_chat_events(items))
    completion = None
    async for item in items:
        if isinstance(item, Completion):
            completion = item
    assert completion is not None
    return {"completion_message": completion.message(), "logprobs": None, "metrics": None}


async def _chat_events(items: AsyncIterator[Delta | Completion]) -> AsyncIterator[dict[str, Any]]:
    def chunk(event_type: str, delta: dict[str, Any], stop_reason: str | None = None) -> dict[str, Any]:
        return {"event": {"event_type": event_type, "delta": delta, "logprobs": None, "stop_reason": stop_reason},
                "metrics": None}

    yield chunk("start", {"type": "text", "text": ""})
    async for item in items:
        if isinstance(item, Delta):
            yield chunk("progress", {"type": "text", "text": item.text})
            continue
        for call in item.tool_calls:
            yield chunk("progress", {"type": "tool_call", "tool_call": call, "parse_status": "succeeded"})
        yield chunk("complete", {"type": "text", "text": ""}, item.stop_reason)


@router.post("/v1/inference/completion", openapi_extra=READ)
async def completion(body: CompletionRequest, stack: Stack = Depends(get_stack)) -> Any:
    model = stack.models.chat_model(body.model_id)
    prompt = content_as_text(body.content, "content")
    sampling = Sampling.of(body.sampling_params)
    chunks = model.complete(prompt, sampling.max_tokens, sampling.temperature, structured_output(body.response_format))
    if body.stream:
        return sse_response(_completion_events(chunks))
    text, finish = "", None
    async for chunk in chunks:
        text += chunk.text
        finish = chunk.finish_reason or finish
    return {"content": text, "stop_reason": _stop(finish), "logprobs": None}


def _stop(finish: str | None) -> str:
    return "out_of_tokens" if finish == "length" else "end_of_turn"


async def _completion_events(chunks: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    async for chunk in chunks:
        yield {"delta": chunk.text, "stop_reason": _stop(chunk.finish_reason) if chunk.finish_reason else None,
               "logprobs": None}


@router.post("/v1/inference/embeddings", response_model=EmbeddingsResponse, openapi_extra=READ)
async def embeddings(body: EmbeddingsRequest, stack: Stack = Depends(get_stack)) -> EmbeddingsResponse:
    if body.output_dimension is not None:
        raise BadRequest("output_dimension is not supported by this embedding model")
    texts = [content_as_text(c, f"contents[{i}]") for i, c in enumerate(body.contents)]
    vectors = await stack.models.embed(body.model_id, texts)
    return EmbeddingsResponse(embeddings=vectors.tolist())
