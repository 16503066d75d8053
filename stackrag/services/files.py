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
# OpenAI's bounds on a file's expires_after.seconds: an hour to 30 days.
EXPIRY_SECONDS = (3600, 2_592_000)


class FileService:
    def __init__(self, registry: Registry, blobs: Blobs, max_bytes: int):
        self._registry = registry
        self._blobs = blobs
        self.max_bytes = max_bytes

    def create(self, filename: str, data: bytes, purpose: str, content_type: str | None,
               expires_after_seconds: int | None = None) -> dict[str, Any]:
        if expires_after_seconds is not None and not EXPIRY_SECONDS[0] <= expires_after_seconds <= EXPIRY_SECONDS[1]:
            raise BadRequest(f"expires_after.seconds must be between {EXPIRY_SECONDS[0]} (an hour) and "
                             f"{EXPIRY_SECONDS[1]} (30 days), not {expires_after_seconds}")
        if purpose not in PURPOSES:
            raise BadRequest(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"the file is {len(data)} bytes; the limit is {self.max_bytes}")
        if not data:
            raise BadRequest("the file is empty")
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        record = {
            "id": file_id, "object": "file", "bytes": len(data), "created_at": created,
            "expires_at": created + expires_after_seconds if expires_after_seconds else None,
            "filename": filename or file_id, "purpose": purpose,
            "content_type": content_type,
        }
        self._blobs.put(file_id, data)
        self._registry.put(NAMESPACE, file_id, tenancy.stamp(record))
        return record

    def get(self, file_id: str) -> dict[str, Any]:
        record = self._registry.get(NAMESPACE, file_id)
        # Expired is gone, whether or not the sweep (VectorStoreService.expire_files) has run yet.
        if record is not None and _expired(record):
            record = None
        return tenancy.own(record, f"File {file_id!r} not found")

    def expired(self) -> list[str]:
        """The ids of every tenant's files past their expires_at, for the sweep that deletes them."""
        return [f["id"] for f in self._registry.list(NAMESPACE) if _expired(f)]

    def content(self, file_id: str) -> bytes:
        self.get(file_id)
        try:
            return self._blobs.get(file_id)
        except KeyError as exc:
            raise NotFound(f"the content of file {file_id!r} is missing") from exc

    def list(self, purpose: str | None = None) -> list[dict[str, Any]]:
        files = [tenancy.without_owner(f) for f in self._registry.list(NAMESPACE) if tenancy.sees(f) and not _expired(f)]
        return [f for f in files if purpose is None or f["purpose"] == purpose]

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        self.remove(file_id)

    def remove(self, file_id: str) -> None:
        """The record and content, unchecked (the caller has checked, or the file has expired)."""
        self._registry.delete(NAMESPACE, file_id)
        self._blobs.delete(file_id)


def _expired(record: dict[str, Any]) -> bool:
    expires_at = record.get("expires_at")
    return expires_at is not None and time.time() >= expires_at
