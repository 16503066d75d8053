"""/v1/models: list, register, get, unregister."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ...core.records import ModelRecord
from ...core.stack import Stack
from ...wire.llama_stack import ListResponse, Model, RegisterModelRequest
from ..deps import get_stack

router = APIRouter()


def to_wire(record: ModelRecord) -> Model:
    return Model(
        identifier=record.identifier,
        provider_resource_id=record.provider_resource_id,
        provider_id=record.provider_id,
        metadata=record.metadata,
        model_type=record.model_type,
    )


@router.get("/v1/models", response_model=ListResponse[Model])
async def list_models(stack: Stack = Depends(get_stack)) -> ListResponse[Model]:
    return ListResponse(data=[to_wire(m) for m in stack.models.list()])


@router.post("/v1/models", response_model=Model)
async def register_model(body: RegisterModelRequest, stack: Stack = Depends(get_stack)) -> Model:
    record = stack.models.register(
        body.model_id, body.provider_model_id, body.provider_id, body.metadata, body.model_type
    )
    return to_wire(record)


@router.get("/v1/models/{model_id:path}", response_model=Model)
async def get_model(model_id: str, stack: Stack = Depends(get_stack)) -> Model:
    return to_wire(stack.models.get(model_id))


@router.delete("/v1/models/{model_id:path}")
async def unregister_model(model_id: str, stack: Stack = Depends(get_stack)) -> None:
    stack.models.unregister(model_id)
