"""Server-sent events as Llama Stack writes them: `data: <json>` lines, no `event:` field and no
[DONE] sentinel (client 0.2.x parses every data line as JSON); an error mid-stream becomes
`data: {"error": {"message": ...}}` and ends the stream."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, AsyncIterator

from fastapi.responses import StreamingResponse

from ..errors import StackError

log = logging.getLogger(__name__)

# A comment line after this long without an event: a model that thinks (or writes a tool call, which
# is held back until it is whole) for minutes would otherwise trip the clients' read timeouts
# (llama-stack-client: 60 s). SSE clients skip comment lines.
KEEPALIVE_SECONDS = float(os.environ.get("STACKRAG_SSE_KEEPALIVE_SECONDS") or 15.0)
KEEPALIVE = ": keepalive\n\n"


def event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _kept_alive(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The events, with KEEPALIVE (as is) in the silences; the pending step is never cancelled."""
    iterator = events.__aiter__()
    while True:
        step = asyncio.ensure_future(iterator.__anext__())
        try:
            while not (await asyncio.wait({step}, timeout=KEEPALIVE_SECONDS))[0]:
                yield KEEPALIVE
        except BaseException:  # the client went away: stop the producer too
            step.cancel()
            raise
        try:
            item = step.result()
        except StopAsyncIteration:
            return
        yield item


async def guarded(events: AsyncIterator[Any]) -> AsyncIterator[str]:
    try:
        async for item in _kept_alive(events):
            yield item if item is KEEPALIVE else event(item)
    except StackError as exc:
        yield event({"error": {"message": exc.message, "status_code": exc.status_code}})
    except Exception:
        log.exception("stream failed")
        yield event({"error": {"message": "Internal server error: An unexpected error occurred."}})


async def _with_done(events: AsyncIterator[str]) -> AsyncIterator[str]:
    async for item in events:
        yield item
    yield "data: [DONE]\n\n"


def sse_response(events: AsyncIterator[Any], done_sentinel: bool = False) -> StreamingResponse:
    """`done_sentinel`: end with `data: [DONE]`, as OpenAI clients expect (never on Llama Stack routes)."""
    body = guarded(events)
    return StreamingResponse(_with_done(body) if done_sentinel else body, media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
