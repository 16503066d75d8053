"""The web playground: one page and its static assets, shipped in the package (no build step, no CDN).

The page talks to the server only through the public API, like any other client; these routes hold
no data, so they stay open when API keys are on (auth.OPEN_PATHS) and out of the OpenAPI schema.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from ...errors import NotFound

router = APIRouter(include_in_schema=False)

# An allow-list rather than a directory lookup: no path a request names can reach another file.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {
    # Document text is untrusted; should anything slip past textContent, no inline or foreign script runs.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidate every time: after an upgrade the page must not mix old and new scripts.
    "cache-control": "no-cache",
}


def _asset(name: str, media_type: str) -> Response:
    body = (files("stackrag.api") / "playground" / name).read_bytes()
    return Response(body, media_type=media_type, headers=HEADERS)


@router.get("/")
async def page() -> Response:
    return _asset("index.html", "text/html; charset=utf-8")


@router.get("/playground/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no playground asset named {name!r}")
    return _asset(name, media_type)
