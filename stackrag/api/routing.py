"""Routes whose large JSON bodies are read off the event loop.

FastAPI parses a JSON body with json.loads on the event loop; a 20 MB body (a document sent
inline, or a hostile list of five million strings) would hold every other request, /v1/health
included, for a quarter of a second or more. Above LARGE_BODY bytes the parse, and the walk that
checks every string is valid Unicode (wire/common.py), run on a thread instead.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Coroutine

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from ..wire.common import MAX_QUERIES, MAX_QUERY_CHARS, UNICODE_CHECKED, lone_surrogate
from .errors import error_response, invalid_request

LARGE_BODY = 256 * 1024
# A route that declares this in openapi_extra refuses a larger body before parsing it: parsing
# millions of items holds the interpreter (json.loads and validation do not let go of it), so a
# bound checked afterwards still stalls every other request meanwhile.
MAX_BODY_KEY = "x-stackrag-max-body"
# A search request: its queries at their longest, escaped as JSON (\uXXXX), and room for the rest.
QUERY_BODY_BYTES = MAX_QUERIES * MAX_QUERY_CHARS * 6 + 64 * 1024
SEARCH_BODY = {MAX_BODY_KEY: QUERY_BODY_BYTES}


def _parse(body: bytes) -> tuple[Any, str | None]:
    data = json.loads(body)
    return data, lone_surrogate(data)


class OffLoopJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        limit = (self.openapi_extra or {}).get(MAX_BODY_KEY)

        async def route_handler(request: Request) -> Response:
            if limit is not None:  # whatever the content type says: FastAPI parses a body without one too
                size = len(await request.body())
                if size > limit:
                    return error_response(f"this request body is {size} bytes; a search takes at most {limit} "
                                          f"({MAX_QUERIES} queries of {MAX_QUERY_CHARS} characters)", 413)
            if not request.headers.get("content-type", "").startswith("application/json"):
                return await handle(request)
            body = await request.body()
            if len(body) <= LARGE_BODY:
                return await handle(request)
            try:
                data, where = await asyncio.to_thread(_parse, body)
            except ValueError:
                return await handle(request)  # FastAPI answers the JSON error as it always does
            if where is not None:
                return invalid_request(where, "holds a lone surrogate (like \\ud800): send valid Unicode text")
            # Starlette's Request.json() returns this cached value; FastAPI asks it.
            request._json = data
            token = UNICODE_CHECKED.set(True)
            try:
                return await handle(request)
            finally:
                UNICODE_CHECKED.reset(token)

        return route_handler


def router() -> APIRouter:
    return APIRouter(route_class=OffLoopJSONRoute)
