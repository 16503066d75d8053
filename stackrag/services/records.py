"""What the registry holds: internal records of models and vector DBs (not the wire shapes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelRecord(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    identifier: str
    provider_id: str
    provider_resource_id: str
    model_type: str = "llm"
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Models from the run config are re-declared at every start; registered ones persist.
    from_config: bool = False

    @property
    def embedding_dimension(self) -> int | None:
        value = self.metadata.get("embedding_dimension")
        return int(value) if value is not None else None


class VectorDBRecord(BaseModel):
    identifier: str
    provider_id: str
    provider_resource_id: str
    embedding_model: str
    embedding_dimension: int
    collection: str
    # Each registration's own: its collection name derives from it (empty for records made before).
    generation: str = ""
    vector_db_name: str | None = None
    created_at: int = 0
    # Vector-store fields (the OpenAI-compatible view of the same record).
    metadata: dict[str, Any] = Field(default_factory=dict)
    last_active_at: int = 0
    # expires_after {anchor: last_active_at, days}: the days of inactivity after which it expires.
    expires_after_days: int | None = None
