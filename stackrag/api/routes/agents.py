"""/v1/agents: agents, sessions, turns (SSE) and steps."""

from __future__ import annotations

from typing import Any, AsyncIterator

from fastapi import Depends, Request

from ...services.stack import Stack
from ...wire.llama_stack import (
    AgentCreated,
    CreateAgentRequest,
    CreateSessionRequest,
    CreateTurnRequest,
    PaginatedList,
    ResumeTurnRequest,
    SessionCreated,
)
from ..access import READ, WRITE, require_write
from ..deps import get_stack, provider_api_key
from ..sse import sse_response
from .. import routing

router = routing.router()


@router.post("/v1/agents", response_model=AgentCreated, openapi_extra=READ)
async def create_agent(body: CreateAgentRequest, stack: Stack = Depends(get_stack)) -> AgentCreated:
    return AgentCreated(agent_id=stack.agents.create_agent(body.agent_config.model_dump(mode="json", exclude_none=True)))


@router.get("/v1/agents", response_model=PaginatedList)
async def list_agents(stack: Stack = Depends(get_stack)) -> PaginatedList:
    return PaginatedList(data=stack.agents.list_agents())


@router.get("/v1/agents/{agent_id}")
async def get_agent(agent_id: str, stack: Stack = Depends(get_stack)) -> dict[str, Any]:
    return stack.agents.get_agent(agent_id)


@router.delete("/v1/agents/{agent_id}", openapi_extra=WRITE)
async def delete_agent(agent_id: str, stack: Stack = Depends(get_stack)) -> None:
    await stack.agents.delete_agent(agent_id)


@router.post("/v1/agents/{agent_id}/session", response_model=SessionCreated, openapi_extra=READ)
async def create_session(agent_id: str, body: CreateSessionRequest, stack: Stack = Depends(get_stack)) -> SessionCreated:
    return SessionCreated(session_id=stack.agents.create_session(agent_id, body.session_name))


@router.get("/v1/agents/{agent_id}/sessions", response_model=PaginatedList)
async def list_sessions(agent_id: str, stack: Stack = Depends(get_stack)) -> PaginatedList:
    stack.agents.get_agent(agent_id)
    return PaginatedList(data=[_session(s) for s in stack.agents.list_sessions(agent_id)])


def _session(session: dict[str, Any]) -> dict[str, Any]:
    return {k: session[k] for k in ("session_id", "session_name", "turns", "started_at")}


@router.get("/v1/agents/{agent_id}/session/{session_id}")
async def get_session(agent_id: str, session_id: str, stack: Stack = Depends(get_stack)) -> dict[str, Any]:
    return _session(stack.agents.get_session(agent_id, session_id))


@router.delete("/v1/agents/{agent_id}/session/{session_id}", openapi_extra=WRITE)
async def delete_session(agent_id: str, session_id: str, stack: Stack = Depends(get_stack)) -> None:
    await stack.agents.delete_session(agent_id, session_id)


@router.post("/v1/agents/{agent_id}/session/{session_id}/turn", openapi_extra=READ)
async def create_turn(agent_id: str, session_id: str, body: CreateTurnRequest, request: Request,
                      stack: Stack = Depends(get_stack)) -> Any:
    messages = [m.model_dump(mode="json", exclude_none=True) for m in body.messages]
    toolgroups = [g if isinstance(g, str) else g.model_dump(mode="json") for g in body.toolgroups or []] or None
    if body.documents:
        require_write(request, "a turn with documents (they are stored in the session's vector DB)")
    agent, session = await stack.agents.prepare_turn(agent_id, session_id, messages, toolgroups,
                                                     body.documents or None)
    api_key = provider_api_key(request, stack, agent["agent_config"]["model"])
    return await _answer(stack.agents.run_turn(agent, session, messages, toolgroups, api_key), bool(body.stream))


async def _answer(payloads: AsyncIterator[dict[str, Any]], stream: bool) -> Any:
    if stream:
        return sse_response(_chunks(payloads))
    # Llama Stack answers 501 here; a whole Turn is more useful and has the same shape as the stream's
    # last event (a turn waiting for client tool results included).
    turn = None
    async for payload in payloads:
        if payload["event_type"] in ("turn_complete", "turn_awaiting_input"):
            turn = payload["turn"]
    return turn


async def _chunks(payloads: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async for payload in payloads:
        yield {"event": {"payload": payload}}


@router.get("/v1/agents/{agent_id}/session/{session_id}/turn/{turn_id}")
async def get_turn(agent_id: str, session_id: str, turn_id: str, stack: Stack = Depends(get_stack)) -> dict[str, Any]:
    return stack.agents.get_turn(agent_id, session_id, turn_id)


@router.get("/v1/agents/{agent_id}/session/{session_id}/turn/{turn_id}/step/{step_id}")
async def get_step(agent_id: str, session_id: str, turn_id: str, step_id: str,
                   stack: Stack = Depends(get_stack)) -> dict[str, Any]:
    return {"step": stack.agents.get_step(agent_id, session_id, turn_id, step_id)}


@router.post("/v1/agents/{agent_id}/session/{session_id}/turn/{turn_id}/resume", openapi_extra=READ)
async def resume_turn(agent_id: str, session_id: str, turn_id: str, body: ResumeTurnRequest, request: Request,
                      stack: Stack = Depends(get_stack)) -> Any:
    responses = [r.model_dump(mode="json") for r in body.tool_responses]
    agent, session, loop = stack.agents.prepare_resume(agent_id, session_id, turn_id, responses)
    api_key = provider_api_key(request, stack, agent["agent_config"]["model"])
    return await _answer(stack.agents.resume_turn(agent, session, loop, api_key), bool(body.stream))
