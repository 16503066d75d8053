"""/v1/vector-dbs: register (keeping the caller's id), list, get, unregister."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Depends, Query
from fastapi.responses import JSONResponse

from ...services.records import VectorDBRecord
from ...services.stack import Stack
from ...wire.llama_stack import ListResponse, RegisterVectorDBRequest, VectorDB
from ..access import WRITE
from ..deps import get_stack
from .. import routing

router = routing.router()


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
async def list_vector_dbs(
    chunk_counts: bool = Query(False, description="add each vector DB's chunk_count (one count query each)"),
    stack: Stack = Depends(get_stack),
) -> Any:
    records = stack.vector_dbs.list()
    listed = ListResponse(data=[to_wire(r) for r in records])
    if not chunk_counts:
        return listed
    counts = await asyncio.to_thread(stack.vector_dbs.chunk_counts, records)
    # The extra field goes only to callers that ask (`stackrag vector-dbs list`): everyone else
    # gets Llama Stack's VectorDB shape unchanged.
    return JSONResponse({"data": [{**db.model_dump(mode="json"), "chunk_count": counts[db.identifier]}
                                  for db in listed.data]})


@router.post("/v1/vector-dbs", response_model=VectorDB, openapi_extra=WRITE)
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


@router.delete("/v1/vector-dbs/{vector_db_id:path}", openapi_extra=WRITE)
async def unregister_vector_db(vector_db_id: str, stack: Stack = Depends(get_stack)) -> None:
    await stack.vector_dbs.unregister(vector_db_id)
