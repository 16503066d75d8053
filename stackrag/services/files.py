"""The Files API: contents in the configured blob store (storage/), metadata in the registry."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..storage.blobs import Blobs
from ..storage.registry import Registry
from . import tenancy

NAMESPACE = "files"
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


class FileService:
    def __init__(self, registry: Registry, blobs: Blobs, max_bytes: int):
        self._registry = registry
        self._blobs = blobs
        self.max_bytes = max_bytes

    def create(self, filename: str, data: bytes, purpose: str, content_type: str | None) -> dict[str, Any]:
        if purpose not in PURPOSES:
            raise BadRequest(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"the file is {len(data)} bytes; the limit is {self.max_bytes}")
        if not data:
            raise BadRequest("the file is empty")
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        record = {
            "id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
            "expires_at": None, "filename": filename or file_id, "purpose": purpose,
            "content_type": content_type,
        }
        self._blobs.put(file_id, data)
        self._registry.put(NAMESPACE, file_id, tenancy.stamp(record))
        return record

    def get(self, file_id: str) -> dict[str, Any]:
        return tenancy.own(self._registry.get(NAMESPACE, file_id), f"File {file_id!r} not found")

    def content(self, file_id: str) -> bytes:
        self.get(file_id)
        try:
            return self._blobs.get(file_id)
        except KeyError as exc:
            raise NotFound(f"the content of file {file_id!r} is missing") from exc

    def list(self, purpose: str | None = None) -> list[dict[str, Any]]:
        files = [tenancy.without_owner(f) for f in self._registry.list(NAMESPACE) if tenancy.sees(f)]
        return [f for f in files if purpose is None or f["purpose"] == purpose]

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        self._registry.delete(NAMESPACE, file_id)
        self._blobs.delete(file_id)
