"""/v1/vector-dbs: register (keeping the caller's id), list, get, unregister."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ...core.records import VectorDBRecord
from ...core.stack import Stack
from ...wire.llama_stack import ListResponse, RegisterVectorDBRequest, VectorDB
from ..deps import get_stack

router = APIRouter()


def to_wire(record: VectorDBRecord) -> VectorDB:
    return VectorDB(
        identifier=record.identifier,
        provider_resource_id=record.provider_resource_id,
        provider_id=record.provider_id,
        embedding_model=record.embedding_model,
        embedding_dimension=record.embedding_dimension,
        vector_db_name=record.vector_db_name,
    )


@router.get("/v1/vector-dbs", response_model=ListResponse[VectorDB])
async def list_vector_dbs(stack: Stack = Depends(get_stack)) -> ListResponse[VectorDB]:
    return ListResponse(data=[to_wire(r) for r in stack.vector_dbs.list()])


@router.post("/v1/vector-dbs", response_model=VectorDB)
async def register_vector_db(body: RegisterVectorDBRequest, stack: Stack = Depends(get_stack)) -> VectorDB:
    record = await stack.vector_dbs.register(
        body.vector_db_id,
        body.embedding_model,
        body.embedding_dimension,
        body.provider_id,
        body.provider_vector_db_id,
        body.vector_db_name,
    )
    return to_wire(record)


@router.get("/v1/vector-dbs/{vector_db_id:path}", response_model=VectorDB)
async def get_vector_db(vector_db_id: str, stack: Stack = Depends(get_stack)) -> VectorDB:
    return to_wire(stack.vector_dbs.get(vector_db_id))


@router.delete("/v1/vector-dbs/{vector_db_id:path}")
async def unregister_vector_db(vector_db_id: str, stack: Stack = Depends(get_stack)) -> None:
    await stack.vector_dbs.unregister(vector_db_id)
