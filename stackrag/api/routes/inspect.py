"""Health, version, providers and the route table."""

from __future__ import annotations

import asyncio

from fastapi import Depends, Request

from ... import LLAMA_STACK_API_VERSION
from ...services.stack import ProviderInfo as StackProvider
from ...services.stack import Stack
from ...errors import NotFound
from ...wire.llama_stack import HealthInfo, ListResponse, ProviderHealth, ProviderInfo, RouteInfo, VersionInfo
from ..deps import get_stack
from ..redaction import redact
from .. import routing

router = routing.router()


@router.get("/v1/health", response_model=HealthInfo)
async def health() -> HealthInfo:
    return HealthInfo(status="OK")


@router.get("/v1/version", response_model=VersionInfo)
async def version() -> VersionInfo:
    return VersionInfo(version=LLAMA_STACK_API_VERSION)


async def _provider_info(info: StackProvider) -> ProviderInfo:
    if info.note:
        health = ProviderHealth(status="Not Implemented", message=info.note)
    elif info.instance is not None:
        health = ProviderHealth(**await asyncio.to_thread(info.instance.health))
    else:
        health = ProviderHealth(status="OK")
    return ProviderInfo(
        api=info.api,
        provider_id=info.provider_id,
        provider_type=info.provider_type,
        config=redact(info.config),
        health=health,
    )


@router.get("/v1/providers", response_model=ListResponse[ProviderInfo])
async def list_providers(stack: Stack = Depends(get_stack)) -> ListResponse[ProviderInfo]:
    return ListResponse(data=list(await asyncio.gather(*(_provider_info(p) for p in stack.providers))))


@router.get("/v1/providers/{provider_id}", response_model=ProviderInfo)
async def get_provider(provider_id: str, stack: Stack = Depends(get_stack)) -> ProviderInfo:
    for info in stack.providers:
        if info.provider_id == provider_id:
            return await _provider_info(info)
    raise NotFound(f"Provider {provider_id!r} not found; GET /v1/providers lists them")


@router.get("/v1/inspect/routes", response_model=ListResponse[RouteInfo])
async def list_routes(request: Request) -> ListResponse[RouteInfo]:
    routes = []
    for route in request.app.routes:
        methods = sorted(getattr(route, "methods", None) or [])
        path = getattr(route, "path", "")
        if not path.startswith("/v1"):
            continue
        routes.extend(RouteInfo(route=path, method=m, provider_types=[]) for m in methods if m != "HEAD")
    return ListResponse(data=routes)
