"""The OpenAPI schema, with the error answers every route can give documented once.

FastAPI documents only 200 and its own 422; stackrag answers validation errors with 400 (as Llama Stack
does) and any route may answer 401/403 (API keys), 404 (an unknown id), 409 (a write fenced off by a
delete), 413 (body size) or 503 (Milvus or a remote model unreachable). Generated clients and schema-driven fuzzers rely on the list being true.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .errors import ErrorBody

ERROR_STATUSES = {
    "400": "Invalid request: the message says which field to fix",
    "401": "Missing or wrong API key",
    "403": "A read-only API key cannot change stored data",
    "404": "An id in the request does not exist",
    "409": "What the write was for was deleted or replaced while it ran; nothing was written",
    "413": "Request body or document too large",
    "503": "Milvus or a remote model cannot be reached right now",
}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_errors(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _with_errors(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in components["ErrorBody"].pop("$defs", {}).items():
        components[name] = definition
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(status, {"description": description, "content": content})
    return schema
