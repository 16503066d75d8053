"""File contents (uploads of the Files API) by id: the protocol, and the directory backend (one file
per id; on shared storage it serves several replicas). PostgreSQL's is in postgres.py."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Protocol

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Blobs(Protocol):
    def put(self, blob_id: str, data: bytes) -> None: ...

    def get(self, blob_id: str) -> bytes:
        """The bytes; KeyError when there are none."""
        ...

    def delete(self, blob_id: str) -> None: ...


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
