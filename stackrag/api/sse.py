"""Server-sent events as Llama Stack writes them: `data: <json>` lines, no `event:` field and no
[DONE] sentinel (client 0.2.x parses every data line as JSON); an error mid-stream becomes
`data: {"error": {"message": ...}}` and ends the stream."""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator

from fastapi.responses import StreamingResponse

from ..errors import StackError

log = logging.getLogger(__name__)


def event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def guarded(events: AsyncIterator[Any]) -> AsyncIterator[str]:
    try:
        async for item in events:
            yield event(item)
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
