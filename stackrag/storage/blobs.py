"""File contents on disk, one file per id under a directory (uploads of the Files API)."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BlobStore:
    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root

    def _path(self, blob_id: str) -> Path:
        # Ids are ours, but they arrive in URLs: never let one name a path outside the store.
        if not _SAFE_ID.match(blob_id):
            raise KeyError(blob_id)
        return self.root / blob_id

    def put(self, blob_id: str, data: bytes) -> None:
        partial = self.root / f".{blob_id}.{uuid.uuid4().hex}.partial"
        partial.write_bytes(data)
        os.replace(partial, self._path(blob_id))

    def get(self, blob_id: str) -> bytes:
        try:
            return self._path(blob_id).read_bytes()
        except FileNotFoundError as exc:
            raise KeyError(blob_id) from exc

    def delete(self, blob_id: str) -> None:
        try:
            self._path(blob_id).unlink(missing_ok=True)
        except KeyError:
            pass
