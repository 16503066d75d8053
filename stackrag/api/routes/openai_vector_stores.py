"""OpenAI-compatible vector stores: stores, their files, file batches, and search."""

from __future__ import annotations

from typing import Any

from fastapi import Depends

from ...services.pagination import page
from ...services.stack import Stack
from ...wire.openai import (
    FileBatchCreate,
    VectorStoreCreate,
    VectorStoreFileCreate,
    VectorStoreFileUpdate,
    VectorStoreSearch,
    VectorStoreUpdate,
)
from ..access import READ, WRITE
from ..deps import get_stack
from .. import routing

router = routing.router()


@router.post("/vector_stores", openapi_extra=WRITE)
async def create(body: VectorStoreCreate, stack: Stack = Depends(get_stack)) -> Any:
    return await stack.vector_stores.create(body.name, body.file_ids, body.chunking_strategy, body.metadata,
                                            body.embedding_model, body.provider_id,
                                            body.expires_after.days if body.expires_after else None)


@router.get("/vector_stores")
async def list_stores(limit: int | None = None, order: str | None = None, after: str | None = None,
                      before: str | None = None, stack: Stack = Depends(get_stack)) -> Any:
    return page(stack.vector_stores.list(), limit, order, after, before)


@router.get("/vector_stores/{store_id}")
async def retrieve(store_id: str, stack: Stack = Depends(get_stack)) -> Any:
    return stack.vector_stores.get(store_id)


@router.post("/vector_stores/{store_id}", openapi_extra=WRITE)
async def update(store_id: str, body: VectorStoreUpdate, stack: Stack = Depends(get_stack)) -> Any:
    return stack.vector_stores.update(store_id, body.name, body.metadata,
                                      body.expires_after.days if body.expires_after else None)


@router.delete("/vector_stores/{store_id}", openapi_extra=WRITE)
async def delete(store_id: str, stack: Stack = Depends(get_stack)) -> Any:
    await stack.vector_stores.delete(store_id)
    return {"id": store_id, "object": "vector_store.deleted", "deleted": True}


@router.post("/vector_stores/{store_id}/search", openapi_extra={**READ, **routing.SEARCH_BODY})
async def search(store_id: str, body: VectorStoreSearch, stack: Stack = Depends(get_stack)) -> Any:
    found = await stack.vector_stores.search(store_id, body.query, body.filters, body.max_num_results,
                                             body.ranking_options, body.search_mode, bool(body.rewrite_query))
    return found.wire()


@router.post("/vector_stores/{store_id}/files", openapi_extra=WRITE)
async def attach(store_id: str, body: VectorStoreFileCreate, stack: Stack = Depends(get_stack)) -> Any:
    return _file(await stack.vector_stores.attach(store_id, body.file_id, body.attributes, body.chunking_strategy))


def _file(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("filename", "attachment")}


@router.get("/vector_stores/{store_id}/files")
async def list_store_files(store_id: str, limit: int | None = None, order: str | None = None, after: str | None = None,
                           before: str | None = None, filter: str | None = None,  # noqa: A002 - OpenAI's name
                           stack: Stack = Depends(get_stack)) -> Any:
    result = page(stack.vector_stores.list_files(store_id, filter), limit, order, after, before)
    result["data"] = [_file(e) for e in result["data"]]
    return result


@router.get("/vector_stores/{store_id}/files/{file_id}")
async def retrieve_file(store_id: str, file_id: str, stack: Stack = Depends(get_stack)) -> Any:
    return _file(stack.vector_stores.get_file(store_id, file_id))


@router.post("/vector_stores/{store_id}/files/{file_id}", openapi_extra=WRITE)
async def update_file(store_id: str, file_id: str, body: VectorStoreFileUpdate,
                      stack: Stack = Depends(get_stack)) -> Any:
    return _file(stack.vector_stores.update_file(store_id, file_id, body.attributes))


@router.get("/vector_stores/{store_id}/files/{file_id}/content")
async def file_content(store_id: str, file_id: str, include_embeddings: bool = False, include_metadata: bool = False,
                       stack: Stack = Depends(get_stack)) -> Any:
    entry = stack.vector_stores.get_file(store_id, file_id)
    content = await stack.vector_stores.file_content(store_id, file_id, include_embeddings, include_metadata)
    # Both shapes: OpenAI's page of content parts and Llama Stack's {file_id, filename, attributes, content}.
    return {"object": "vector_store.file_content.page", "data": content, "has_more": False, "next_page": None,
            "file_id": file_id, "filename": entry["filename"], "attributes": entry["attributes"], "content": content}


@router.delete("/vector_stores/{store_id}/files/{file_id}", openapi_extra=WRITE)
async def detach(store_id: str, file_id: str, stack: Stack = Depends(get_stack)) -> Any:
    await stack.vector_stores.detach(store_id, file_id)
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


@router.post("/vector_stores/{store_id}/file_batches", openapi_extra=WRITE)
async def create_batch(store_id: str, body: FileBatchCreate, stack: Stack = Depends(get_stack)) -> Any:
    return await stack.vector_stores.create_batch(store_id, body.file_ids, body.attributes, body.chunking_strategy)


@router.get("/vector_stores/{store_id}/file_batches/{batch_id}")
async def retrieve_batch(store_id: str, batch_id: str, stack: Stack = Depends(get_stack)) -> Any:
    return stack.vector_stores.get_batch(store_id, batch_id)


@router.get("/vector_stores/{store_id}/file_batches/{batch_id}/files")
async def batch_files(store_id: str, batch_id: str, limit: int | None = None, order: str | None = None,
                      after: str | None = None, before: str | None = None, stack: Stack = Depends(get_stack)) -> Any:
    result = page(stack.vector_stores.batch_files(store_id, batch_id), limit, order, after, before)
    result["data"] = [_file(e) for e in result["data"]]
    return result


@router.post("/vector_stores/{store_id}/file_batches/{batch_id}/cancel", openapi_extra=WRITE)
async def cancel_batch(store_id: str, batch_id: str, stack: Stack = Depends(get_stack)) -> Any:
    return stack.vector_stores.cancel_batch(store_id, batch_id)
