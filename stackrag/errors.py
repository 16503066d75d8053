"""Domain errors. Services raise these; the API layer maps each to one HTTP status."""

from __future__ import annotations

import re
from typing import Any, Iterable

# A union member's tag in a pydantic error location (`str`, `constrained-str`, `list[...]`,
# `ComparisonFilter`, `function-after[...]`): not a field a person could fix.
_UNION_TAG = re.compile(r"^[A-Z]|[\[\-]|^(str|int|float|bool|dict|list)$")


class StackError(Exception):
    status_code = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(StackError):
    status_code = 400


class Forbidden(StackError):
    """The caller's key may not do this (a read-only key, a write)."""

    status_code = 403


class NotFound(StackError):
    status_code = 404


class Conflict(StackError):
    """The thing a request worked on changed under it (deleted, re-created): nothing was written."""

    status_code = 409


class PayloadTooLarge(StackError):
    status_code = 413


class Unavailable(StackError):
    """A backend (Milvus, a remote model) cannot be reached right now."""

    status_code = 503


def field_path(loc: Iterable[Any], prefix: str = "") -> str:
    parts = [str(x) for x in loc if x != "body" and not (isinstance(x, str) and _UNION_TAG.search(x))]
    path = ".".join(parts)
    return f"{prefix}.{path}" if prefix and path else prefix or path


def describe_validation_errors(errors: Iterable[dict[str, Any]], prefix: str = "", limit: int = 8) -> str:
    """`field.path: what is wrong; ...`, the message of every 400 from a malformed body or config file."""
    parts = []
    for err in list(errors)[:limit]:
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{field_path(err.get('loc', ()), prefix) or 'body'}: {message}")
    return "; ".join(dict.fromkeys(parts))


def bad_request_from(exc: Any, prefix: str) -> BadRequest:
    """A pydantic ValidationError (e.g. of a tool's kwargs) as the 400 that names its fields."""
    return BadRequest(f"Invalid request: {describe_validation_errors(exc.errors(), prefix)}")
