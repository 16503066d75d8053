"""The one HTTP client every command uses to talk to a running stackrag.

It sends `Authorization: Bearer $STACKRAG_API_KEY` when that is set, and turns what can go wrong
into a `click.ClickException` that says what to do: a server that is not there, an error answer
(with the server's own `detail`, which names what to fix), or a timeout.
"""

from __future__ import annotations

import os
from typing import Any

import click
import httpx

DEFAULT_URL = "http://127.0.0.1:8321"
API_KEY_ENV = "STACKRAG_API_KEY"

# Options every command that talks to a server shares.
url_option = click.option("--url", default=DEFAULT_URL, show_default=True, envvar="STACKRAG_URL",
                          help="the stackrag server (env STACKRAG_URL)")


class ApiError(click.ClickException):
    """An error answer from the server; `status_code` lets a command handle e.g. 404 itself, and
    `detail` is the server's own words."""

    def __init__(self, message: str, status_code: int, detail: str):
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


def auth_headers() -> dict[str, str]:
    key = os.environ.get(API_KEY_ENV, "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str):
        detail = response.text.strip()[:500] or response.reason_phrase
    if response.status_code == 401:
        hint = "set STACKRAG_API_KEY to a key of this server" if not auth_headers() else \
            "STACKRAG_API_KEY is not a key of this server"
        detail += f" ({hint})"
    return detail


class Client(httpx.Client):
    """httpx.Client whose failures are ClickExceptions, so a command never prints a traceback."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            response = super().send(request, **kwargs)
        except httpx.ConnectError as exc:
            raise click.ClickException(
                f"cannot reach stackrag at {self.base_url} ({exc}); start it with `stackrag run` "
                "or point --url / STACKRAG_URL at a running server") from exc
        except httpx.TimeoutException as exc:
            raise click.ClickException(f"{request.method} {request.url.path}: no answer from {self.base_url} "
                                       f"in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise broken(self.base_url, exc) from exc
        if response.status_code >= 400:
            response.read()  # a streamed error answer has its body unread yet
            response.close()
            detail = error_detail(response)
            message = f"{request.method} {request.url.path}: {response.status_code} {detail}"
            raise ApiError(message, response.status_code, detail)
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the decoded JSON body (None when empty)."""
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def vector_db_exists(self, vector_db: str) -> bool:
        try:
            self.call("GET", f"/v1/vector-dbs/{vector_db}")
            return True
        except ApiError as exc:
            if exc.status_code != 404:
                raise
            return False


def broken(url: httpx.URL, exc: httpx.TransportError) -> click.ClickException:
    """The connection failed after it was made (the server stopped or restarted meanwhile)."""
    return click.ClickException(f"the connection to {url.scheme}://{url.netloc.decode()} broke ({type(exc).__name__}: {exc}); "
                                "is the server still running?")


def connect(url: str, timeout: float = 600.0) -> Client:
    # Answers from a local model on 2 cores take minutes in the worst case; connecting must not.
    return Client(base_url=url, headers=auth_headers(), timeout=httpx.Timeout(timeout, connect=10.0))
