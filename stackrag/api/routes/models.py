"""/v1/models: list, register, get, unregister."""

from __future__ import annotations

from typing import Any

from fastapi import Depends

from ...services.records import ModelRecord
from ...services.stack import Stack
from ...wire.llama_stack import Model, RegisterModelRequest
from ..access import WRITE
from ..deps import get_stack
from .. import routing

router = routing.router()
openai_router = routing.router()


def to_wire(record: ModelRecord) -> Model:
    return Model(
        identifier=record.identifier,
        provider_resource_id=record.provider_resource_id,
        provider_id=record.provider_id,
        metadata=record.metadata,
        model_type=record.model_type,
    )


def merged(record: ModelRecord) -> dict[str, Any]:
    """Llama Stack's Model plus OpenAI's fields: /v1/models serves both kinds of client."""
    return {**to_wire(record).model_dump(), "id": record.identifier, "object": "model", "created": 0,
            "owned_by": record.provider_id}


@router.get("/v1/models")
async def list_models(stack: Stack = Depends(get_stack)) -> dict[str, Any]:
    return {"object": "list", "data": [merged(m) for m in stack.models.list()]}


@openai_router.get("/models")
async def list_openai_models(stack: Stack = Depends(get_stack)) -> dict[str, Any]:
    return {"object": "list", "data": [merged(m) for m in stack.models.list()]}


@router.post("/v1/models", response_model=Model, openapi_extra=WRITE)
async def register_model(body: RegisterModelRequest, stack: Stack = Depends(get_stack)) -> Model:
    record = stack.models.register(
        body.model_id, body.provider_model_id, body.provider_id, body.metadata, body.model_type
    )
    return to_wire(record)


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, stack: Stack = Depends(get_stack)) -> dict[str, Any]:
    return merged(stack.models.get(model_id))


@router.delete("/v1/models/{model_id:path}", openapi_extra=WRITE)
async def unregister_model(model_id: str, stack: Stack = Depends(get_stack)) -> None:
    stack.models.unregister(model_id)
