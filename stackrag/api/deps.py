"""How routes reach the services: the Stack built at start-up lives on the app."""

from __future__ import annotations

from fastapi import Request

from ..services.stack import Stack


async def get_stack(request: Request) -> Stack:
    # async: FastAPI runs a sync dependency on the thread pool, a thread hop on every request.
    return request.app.state.stack


def provider_api_key(request: Request, stack: Stack, model_id: str) -> str | None:
    """A remote provider's key from the X-LlamaStack-Provider-Data header, if the caller sent one."""
    import json

    raw = request.headers.get("x-llamastack-provider-data")
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        from ..errors import BadRequest

        raise BadRequest("X-LlamaStack-Provider-Data must be a JSON object") from exc
    provider = stack.models.provider(stack.models.get(model_id).provider_id)
    reader = getattr(provider, "key_from_provider_data", None)
    return reader(data) if reader and isinstance(data, dict) else None
