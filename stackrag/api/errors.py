"""The JSON body of every error answer: `detail` for Llama Stack clients, `error` for OpenAI ones."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..errors import describe_validation_errors


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int
    detail: dict[str, Any] | None = None  # validation errors: Llama Stack's {"errors": [...]}


class ErrorBody(BaseModel):
    """What every error answer holds (documented in the OpenAPI schema)."""

    detail: str
    error: OpenAIError | None = None


def openai_error(message: str, status: int) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error"}.get(status, "server_error")
    return {"message": message, "type": kind, "param": None, "code": status}


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message, "error": openai_error(message, status)}, status_code=status,
                        headers=headers)


def validation_response(errors: list[dict[str, Any]]) -> JSONResponse:
    """A malformed request: `detail` names the fields for people; `error.detail.errors` is Llama Stack's
    own shape (loc, msg, type per error)."""
    message = f"Invalid request: {describe_validation_errors(errors)}"
    return JSONResponse(
        {"detail": message, "error": {"detail": {"errors": errors}, **openai_error(message, 400)}},
        status_code=400,
    )


def invalid_request(field: str, message: str) -> JSONResponse:
    return validation_response([{"loc": field.split("."), "msg": message, "type": "value_error"}])
