"""How routes reach the services: the Stack built at start-up lives on the app."""

from __future__ import annotations

from fastapi import Request

from ..core.stack import Stack


def get_stack(request: Request) -> Stack:
    return request.app.state.stack
