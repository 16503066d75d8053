"""How routes reach the services: the Stack built at start-up lives on the app."""

from __future__ import annotations

import json

from fastapi import Request

from ..errors import BadRequest
from ..services.stack import Stack


async def get_stack(request: Request) -> Stack:
    # async: FastAPI runs a sync dependency on the thread pool, a thread hop on every request.
    return request.app.state.stack


def provider_api_key(request: Request, stack: Stack, model_id: str) -> str | None:
    """A remote provider's key from the X-LlamaStack-Provider-Data header, if the caller sent one."""
    raw = request.headers.get("x-llamastack-provider-data")
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BadRequest("X-LlamaStack-Provider-Data must be a JSON object")
    return stack.models.provider_key(model_id, data)
