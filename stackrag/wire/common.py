"""What every wire shape shares: lenient models, request bodies checked for valid Unicode, and the
typed scalars (ids, counts, scores) whose limits the API promises.

A malformed body never reaches a service: pydantic refuses it with a 400 that names the field.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

T = TypeVar("T")
# Set while a request's body was already checked for valid Unicode off the event loop (a large
# body: api/routing.py), so the model does not walk it again on the loop.
UNICODE_CHECKED: ContextVar[bool] = ContextVar("stackrag_unicode_checked", default=False)

MAX_ID_LENGTH = 256
# Milvus stores document_id in a VARCHAR(2048) field; half of that leaves room for UTF-8.
MAX_DOCUMENT_ID_BYTES = 1024
# A question, a query or a search string: long enough for a pasted paragraph, bounded for the embedder.
MAX_QUERY_CHARS = 16_384
MAX_QUERIES = 16
MAX_TEMPLATE_CHARS = 4_096
MAX_LIST = 10_000


class Lenient(BaseModel):
    """Newer clients add fields; unknown keys are ignored rather than refused."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class RequestBody(Lenient):
    """A whole request body: every string in it, keys included, must be valid Unicode. JSON can carry
    a lone surrogate (\\ud800), which Python keeps and which no store or encoder accepts later."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if UNICODE_CHECKED.get():
            return data
        where = lone_surrogate(data)
        if where is not None:
            raise ValueError(f"{where or 'the body'} holds a lone surrogate (like \\ud800): send valid Unicode text")
        return data


def lone_surrogate(value: Any) -> str | None:
    """The path of the first string that is not valid Unicode, or None; iterative, so depth is no risk."""
    todo: list[tuple[Any, str]] = [(value, "")]
    while todo:
        item, path = todo.pop()
        if isinstance(item, str):
            if not _encodes(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                here = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and not _encodes(key):
                    return path or "a key"
                todo.append((child, here))
        elif isinstance(item, (list, tuple)):
            todo.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_control(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def check_document_id(value: str) -> str:
    """A document id as the vector store keeps it: not blank, no control characters, <= 1024 bytes."""
    _not_blank(value)
    _no_control(value)
    if len(value.encode("utf-8")) > MAX_DOCUMENT_ID_BYTES:
        raise ValueError(f"is longer than {MAX_DOCUMENT_ID_BYTES} bytes")
    return value


def _at_most(limit: int) -> Any:
    def check(value: Any) -> Any:
        # Before the items are validated: a hostile list of millions fails at once, with one error.
        if isinstance(value, list) and len(value) > limit:
            raise ValueError(f"may hold at most {limit} items, not {len(value)}")
        return value

    return BeforeValidator(check)


def bounded_list(item: Any, limit: int, min_length: int = 0) -> Any:
    """list[item] of at most `limit` items, refused before its items are looked at."""
    return Annotated[list[item], _at_most(limit), Field(min_length=min_length, max_length=limit)]


# Names of things: vector DBs, vector stores, files, agents, sessions, models.
ResourceId = Annotated[str, Field(max_length=MAX_ID_LENGTH), AfterValidator(_not_blank), AfterValidator(_no_control)]
DocumentId = Annotated[str, AfterValidator(check_document_id)]
# Integers that must be integers (JSON true is not 1 here) and numbers that must be numbers.
Int = Annotated[int, Field(strict=True)]


def _decimal_digits(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else value


# An integer that may also come as its decimal digits: Llama Stack's own test harness sends the
# embedding dimension as the string "384", which its (lax) server takes.
IntOrDigits = Annotated[int, BeforeValidator(_decimal_digits), Field(strict=True)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
QueryText = Annotated[str, Field(max_length=MAX_QUERY_CHARS)]
