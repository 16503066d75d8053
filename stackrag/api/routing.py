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

from ..wire.common import UNICODE_CHECKED, lone_surrogate
from .errors import invalid_request

LARGE_BODY = 256 * 1024


def _parse(body: bytes) -> tuple[Any, str | None]:
    data = json.loads(body)
    return data, lone_surrogate(data)


class OffLoopJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
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
