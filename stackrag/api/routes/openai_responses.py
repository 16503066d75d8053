"""OpenAI-compatible /responses (with file_search) and /conversations."""

from __future__ import annotations

from typing import Any, AsyncIterator

from fastapi import Depends, Request

from ...services.pagination import page
from ...services.stack import Stack
from ...wire.openai import ConversationCreate, ConversationItemsCreate, ConversationUpdate, ResponseCreate
from ..access import READ, WRITE
from ..deps import get_stack, provider_api_key
from ..sse import sse_response
from .. import routing

router = routing.router()


@router.post("/responses", openapi_extra=READ)
async def create_response(body: ResponseCreate, request: Request, stack: Stack = Depends(get_stack)) -> Any:
    events = stack.responses.create(body, provider_api_key(request, stack, body.model))
    # Validate before any byte is sent: the first event comes only after the checks.
    first = await events.__anext__()
    if body.stream:
        return sse_response(_prepend(first, events), done_sentinel=True)
    last = first
    async for event in events:
        last = event
    return last["response"]


async def _prepend(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for event in rest:
        yield event


@router.get("/responses/{response_id}")
async def get_response(response_id: str, stack: Stack = Depends(get_stack)) -> Any:
    return stack.responses.get(response_id)


@router.get("/responses/{response_id}/input_items")
async def input_items(response_id: str, stack: Stack = Depends(get_stack)) -> Any:
    items = [{"id": f"{response_id}-in-{i}", "type": "message", "role": m["role"],
              "content": [{"type": "input_text", "text": m["content"]}]}
             for i, m in enumerate(stack.responses.input_items(response_id))]
    return {"object": "list", "data": items, "has_more": False,
            "first_id": items[0]["id"] if items else None, "last_id": items[-1]["id"] if items else None}


@router.delete("/responses/{response_id}", openapi_extra=WRITE)
async def delete_response(response_id: str, stack: Stack = Depends(get_stack)) -> Any:
    stack.responses.delete(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.post("/conversations", openapi_extra=READ)
async def create_conversation(body: ConversationCreate, stack: Stack = Depends(get_stack)) -> Any:
    return stack.responses.create_conversation(body.metadata, body.items)


@router.get("/conversations/{conversation_id}")
async def get_conversation(conversation_id: str, stack: Stack = Depends(get_stack)) -> Any:
    return stack.responses.get_conversation(conversation_id)


@router.post("/conversations/{conversation_id}", openapi_extra=READ)
async def update_conversation(conversation_id: str, body: ConversationUpdate, stack: Stack = Depends(get_stack)) -> Any:
    return stack.responses.update_conversation(conversation_id, body.metadata)


@router.delete("/conversations/{conversation_id}", openapi_extra=WRITE)
async def delete_conversation(conversation_id: str, stack: Stack = Depends(get_stack)) -> Any:
    stack.responses.delete_conversation(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.post("/conversations/{conversation_id}/items", openapi_extra=READ)
async def add_items(conversation_id: str, body: ConversationItemsCreate, stack: Stack = Depends(get_stack)) -> Any:
    items = stack.responses.add_items(conversation_id, body.items)
    return {"object": "list", "data": items, "has_more": False,
            "first_id": items[0]["id"] if items else None, "last_id": items[-1]["id"] if items else None}


@router.get("/conversations/{conversation_id}/items")
async def list_items(conversation_id: str, limit: int | None = None, order: str | None = None,
                     after: str | None = None, stack: Stack = Depends(get_stack)) -> Any:
    items = [{**item, "created_at": n} for n, item in enumerate(stack.responses.items(conversation_id))]
    result = page(items, limit, order or "asc", after, None)
    result["data"] = [{k: v for k, v in i.items() if k != "created_at"} for i in result["data"]]
    return result


@router.get("/conversations/{conversation_id}/items/{item_id}")
async def get_item(conversation_id: str, item_id: str, stack: Stack = Depends(get_stack)) -> Any:
    return stack.responses.get_item(conversation_id, item_id)


@router.delete("/conversations/{conversation_id}/items/{item_id}", openapi_extra=WRITE)
async def delete_item(conversation_id: str, item_id: str, stack: Stack = Depends(get_stack)) -> Any:
    stack.responses.delete_item(conversation_id, item_id)
    return stack.responses.get_conversation(conversation_id)
