"""OpenAI-compatible Files: multipart upload, list, retrieve, content, delete."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, File, Form, UploadFile
from fastapi.responses import Response

from ...services.pagination import page
from ...services.stack import Stack
from ...errors import BadRequest, PayloadTooLarge
from ..access import WRITE
from ..deps import get_stack
from .. import routing

router = routing.router()


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "content_type"}


@router.post("/files", openapi_extra=WRITE)
async def upload(file: UploadFile = File(...), purpose: str = Form(...),
                 # OpenAI's SDK sends the expires_after object as bracketed form fields.
                 expires_anchor: str | None = Form(None, alias="expires_after[anchor]", max_length=32),
                 expires_seconds: str | None = Form(None, alias="expires_after[seconds]", max_length=16),
                 stack: Stack = Depends(get_stack)) -> Any:
    seconds = _expiry_seconds(expires_anchor, expires_seconds)
    limit = stack.files.max_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"the file is larger than the limit of {limit} bytes")
    return _public(stack.files.create(file.filename or "upload", data, purpose, file.content_type, seconds))


def _expiry_seconds(anchor: str | None, seconds: str | None) -> int | None:
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise BadRequest("expires_after.anchor must be 'created_at'")
    if seconds is None or not seconds.strip().isdigit():
        raise BadRequest("expires_after.seconds must be a whole number of seconds")
    return int(seconds)


@router.get("/files")
async def list_files(after: str | None = None, limit: int | None = None, order: str | None = None,
                     purpose: str | None = None, stack: Stack = Depends(get_stack)) -> Any:
    result = page(stack.files.list(purpose), limit, order, after, None)
    result["data"] = [_public(r) for r in result["data"]]
    return result


@router.get("/files/{file_id}")
async def retrieve(file_id: str, stack: Stack = Depends(get_stack)) -> Any:
    return _public(stack.files.get(file_id))


@router.get("/files/{file_id}/content", response_class=Response, responses={
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def content(file_id: str, stack: Stack = Depends(get_stack)) -> Response:
    stack.files.get(file_id)
    # Always bytes to download, whatever type the uploader claimed: an uploaded HTML or SVG file served
    # with its own type would run as a page on this origin, next to the playground and its API key.
    return Response(stack.files.content(file_id), media_type="application/octet-stream",
                    headers={"Content-Disposition": "attachment", "X-Content-Type-Options": "nosniff"})


@router.delete("/files/{file_id}", openapi_extra=WRITE)
async def delete(file_id: str, stack: Stack = Depends(get_stack)) -> Any:
    await stack.vector_stores.delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
