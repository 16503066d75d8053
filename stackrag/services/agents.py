"""Agents, sessions and turns: the Llama Stack 0.2.x agent loop.

A turn is a sequence of steps (inference, tool_execution) streamed as events. With `builtin::rag`
the default is to retrieve first with the user's message ("retrieve_first"): small models often
skip the tool, so retrieval must not depend on them. The retrieval is still reported as the model
calling knowledge_search followed by a tool_execution step, the shapes clients expect. The final
answer of a turn that searched carries `citations`: each sentence with the passages that support it
(services/citations.py), an extra field of the Turn that clients which do not know it ignore.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from pydantic import TypeAdapter, ValidationError

from ..content.text import content_as_text
from ..errors import BadRequest, NotFound, bad_request_from
from ..providers.protocols import StructuredOutput
from ..storage.registry import Registry
from . import tenancy
from ..wire.llama_stack import RAGQueryConfig as RAGQueryConfigIn
from ..wire.llama_stack import RAGDocument, RAGToolArgs, SamplingParams, TurnDocument
from ..wire.response_format import LlamaResponseFormat
from .citations import Attribution, Passage
from .inference import DEFAULT_ANSWER_TOKENS, Completion, Delta, Sampling, generate, structured_output
from .messages import to_openai, tool_call, tool_definition_to_openai
from .models import ModelService
from .rag import RAGService
from .retrieval import RAGQueryConfig, RAGResult
from .toolgroups import RAG_TOOLGROUP, TOOLGROUPS

log = logging.getLogger(__name__)

AGENTS = "agents"
SESSIONS = "sessions"
DEFAULT_MAX_INFER_ITERS = 10
# Below this many tokens of room, retrieved context is not worth sending.
MIN_CONTEXT_TOKENS = 256

# The answer when the documents hold nothing relevant: said plainly, not invented by the model.
NO_CONTEXT_ANSWER = "I could not find anything about this in the documents, so I cannot answer it from them."


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class RAGTool:
    vector_db_ids: list[str]
    query_config: RAGQueryConfigIn | None
    mode: str  # retrieve_first | model_decides


@dataclass
class TurnState:
    turn_id: str
    session_id: str
    input_messages: list[dict[str, Any]]
    started_at: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    last_result: RAGResult | None = None

    def turn(self, output: dict[str, Any]) -> dict[str, Any]:
        return {
            "turn_id": self.turn_id,
            "session_id": self.session_id,
            "input_messages": self.input_messages,
            "steps": self.steps,
            "output_message": output,
            "output_attachments": [],
            "started_at": self.started_at,
            "completed_at": now(),
            # Not in Llama Stack's Turn; clients ignore unknown keys. The documents the answer used.
            "sources": self.sources,
        }


def rag_tool_of(toolgroups: list[Any], default_mode: str) -> RAGTool | None:
    """The builtin::rag toolgroup(s) of an agent, merged; None when there is none."""
    found: RAGTool | None = None
    for group in toolgroups or []:
        name, args = (group, {}) if isinstance(group, str) else (group.get("name"), group.get("args") or {})
        if not isinstance(name, str):
            raise BadRequest("toolgroups entries must be a name or {'name': ..., 'args': {...}}")
        base = name.split("/")[0]
        if base not in TOOLGROUPS:
            raise BadRequest(f"toolgroup {name!r} is not available; this server has {', '.join(TOOLGROUPS)}")
        if base != RAG_TOOLGROUP:
            continue
        try:
            parsed = RAGToolArgs.model_validate(args)
        except ValidationError as exc:
            raise bad_request_from(exc, f"toolgroup {name}: args") from None
        if found is None:
            found = RAGTool(list(parsed.vector_db_ids), parsed.query_config, parsed.retrieval or default_mode)
        else:
            found.vector_db_ids += [i for i in parsed.vector_db_ids if i not in found.vector_db_ids]
    return found


class AgentService:
    def __init__(self, registry: Registry, models: ModelService, rag: RAGService, attribution: Attribution,
                 retrieval_mode: str = "retrieve_first"):
        self._registry = registry
        self._models = models
        self._rag = rag
        self._attribution = attribution
        self._retrieval_mode = retrieval_mode
        # Sessions of agents without enable_session_persistence live only in this process, unless
        # the registry is shared: then the next turn may come to another replica, which must see it.
        self._memory_sessions: dict[str, dict[str, Any]] = {}

    # -- agents -------------------------------------------------------------------------------

    def create_agent(self, config: dict[str, Any]) -> str:
        model = config.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("agent_config.model is required")
        self._models.chat_model(model)  # an unknown or non-chat model fails now, not at the first turn
        rag = rag_tool_of(config.get("toolgroups") or [], self._retrieval_mode)
        names = [t["name"] for t in config.get("client_tools") or []]
        if len(set(names)) != len(names) or "knowledge_search" in names:
            raise BadRequest("client_tools names must be unique and not knowledge_search (the RAG tool's)")
        choice = _tool_choice(config)
        if choice not in ("auto", "required", "none") and choice not in names + ["knowledge_search"]:
            raise BadRequest(f"tool_choice {choice!r} is none of auto, required, none or a tool of this agent "
                             f"({', '.join(names) or 'it has none'})")
        if config.get("input_shields") or config.get("output_shields"):
            raise BadRequest("shields are not supported by stackrag; leave input_shields/output_shields empty")
        if _structured(config) is not None:
            _check_format_without_tools(rag, names)
        if tenancy.current() is not None and rag is not None:
            self._rag.check_visible(rag.vector_db_ids)  # a scoped key's agent reads only its own stores
        agent_id = str(uuid.uuid4())
        record = {"agent_id": agent_id, "agent_config": config, "created_at": now()}
        self._registry.put(AGENTS, agent_id, tenancy.stamp(record))
        return agent_id

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        return tenancy.own(self._registry.get(AGENTS, agent_id), f"Agent {agent_id!r} not found")

    def list_agents(self) -> list[dict[str, Any]]:
        return [tenancy.without_owner(a) for a in self._registry.list(AGENTS) if tenancy.sees(a)]

    async def delete_agent(self, agent_id: str) -> None:
        self.get_agent(agent_id)
        for session in self.list_sessions(agent_id):
            await self.delete_session(agent_id, session["session_id"])
        self._registry.delete(AGENTS, agent_id)

    # -- sessions -----------------------------------------------------------------------------

    def _persistent(self, agent: dict[str, Any]) -> bool:
        return self._registry.shared or bool(agent["agent_config"].get("enable_session_persistence"))

    def create_session(self, agent_id: str, session_name: str) -> str:
        agent = self.get_agent(agent_id)
        session = {"session_id": str(uuid.uuid4()), "session_name": session_name, "agent_id": agent_id,
                   "turns": [], "started_at": now()}
        self._save_session(agent, session)
        return session["session_id"]

    def _save_session(self, agent: dict[str, Any], session: dict[str, Any]) -> None:
        if self._persistent(agent):
            self._registry.put(SESSIONS, session["session_id"], session)
        else:
            self._memory_sessions[session["session_id"]] = session

    def get_session(self, agent_id: str, session_id: str) -> dict[str, Any]:
        self.get_agent(agent_id)
        session = self._memory_sessions.get(session_id) or self._registry.get(SESSIONS, session_id)
        if session is None or session["agent_id"] != agent_id:
            raise NotFound(f"Session {session_id!r} not found for agent {agent_id!r}")
        return session

    def list_sessions(self, agent_id: str) -> list[dict[str, Any]]:
        stored = [s for s in self._registry.list(SESSIONS) if s["agent_id"] == agent_id]
        return stored + [s for s in self._memory_sessions.values() if s["agent_id"] == agent_id]

    async def delete_session(self, agent_id: str, session_id: str) -> None:
        session = self.get_session(agent_id, session_id)
        self._memory_sessions.pop(session_id, None)
        self._registry.delete(SESSIONS, session_id)
        if session.get("vector_db_id"):
            await self._rag.drop_own(session["vector_db_id"])

    def get_turn(self, agent_id: str, session_id: str, turn_id: str) -> dict[str, Any]:
        for turn in self.get_session(agent_id, session_id)["turns"]:
            if turn["turn_id"] == turn_id:
                return turn
        raise NotFound(f"Turn {turn_id!r} not found in session {session_id!r}")

    def get_step(self, agent_id: str, session_id: str, turn_id: str, step_id: str) -> dict[str, Any]:
        for step in self.get_turn(agent_id, session_id, turn_id)["steps"]:
            if step["step_id"] == step_id:
                return step
        raise NotFound(f"Step {step_id!r} not found in turn {turn_id!r}")

    # -- turns --------------------------------------------------------------------------------

    async def prepare_turn(
        self, agent_id: str, session_id: str, messages: list[dict[str, Any]], toolgroups: list[Any] | None,
        documents: list[TurnDocument] | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Check a turn before any event is streamed, so bad input is a plain 4xx; documents given
        with the turn are made searchable here, for this turn and the session's later ones."""
        agent = self.get_agent(agent_id)
        session = self.get_session(agent_id, session_id)
        if not messages:
            raise BadRequest("messages must hold at least one message")
        for i, message in enumerate(messages):
            if message.get("role") not in ("user", "tool"):
                raise BadRequest(f"messages[{i}].role must be 'user' or 'tool' in a turn")
            to_openai(message, f"messages[{i}]")
        rag = rag_tool_of(toolgroups, self._retrieval_mode) if toolgroups else None
        if documents and rag is None:  # the session's documents are searched as builtin::rag is
            rag = RAGTool([], None, self._retrieval_mode)
        if _structured(agent["agent_config"]) is not None:
            _check_format_without_tools(rag, [])
        if documents:
            await self._attach_documents(agent, session, documents)
        return agent, session

    async def _attach_documents(self, agent: dict[str, Any], session: dict[str, Any],
                                documents: list[TurnDocument]) -> None:
        """Into the session's own vector DB (made on the first attachment, dropped with the session).
        Llama Stack pastes the documents' whole text into the user message instead, which overflows a
        small model's context with any real document; searched, they fit."""
        vector_db_id = session.get("vector_db_id") or f"session-{session['session_id']}"
        docs = [RAGDocument.model_validate({
            "document_id": d.document_id or f"attachment-{uuid.uuid4().hex[:12]}",
            "content": d.model_dump(mode="json")["content"], "mime_type": d.mime_type, "metadata": d.metadata or {},
        }) for d in documents]
        await self._rag.insert_into_own(vector_db_id, docs)
        if session.get("vector_db_id") != vector_db_id:
            session["vector_db_id"] = vector_db_id
            self._save_session(agent, session)

    async def run_turn(
        self,
        agent: dict[str, Any],
        session: dict[str, Any],
        messages: list[dict[str, Any]],
        toolgroups: list[Any] | None = None,
        api_key: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the turn's event payloads, ending with turn_complete."""
        config = agent["agent_config"]
        model, sampling = self._model_and_sampling(config)
        rag = rag_tool_of(list(config.get("toolgroups") or []) + list(toolgroups or []), self._retrieval_mode)
        if session.get("vector_db_id"):  # documents attached to this session's turns are searched too
            if rag is None:
                rag = RAGTool([], None, self._retrieval_mode)
            if session["vector_db_id"] not in rag.vector_db_ids:
                rag.vector_db_ids.append(session["vector_db_id"])
        max_iters = int(config.get("max_infer_iters") or DEFAULT_MAX_INFER_ITERS)
        state = TurnState(str(uuid.uuid4()), session["session_id"], [dict(m, context=None) for m in messages], now())

        history = await self._history(config, session, model)
        conversation = history + [to_openai(m, f"messages[{i}]") for i, m in enumerate(messages)]
        client_tools = {t["name"]: t for t in config.get("client_tools") or []}
        tools = ([self._search_tool()] if rag and rag.mode == "model_decides" else []) + [
            _client_tool_to_openai(t) for t in client_tools.values()]

        if rag and rag.mode == "retrieve_first":
            query = content_as_text(messages[-1].get("content"), "content", sep=" ")
            call = tool_call("knowledge_search", {"query": query})
            async for event in self._fixed_inference_step(state, Completion(text="", tool_calls=[call])):
                yield event
            async for event in self._run_knowledge_search(state, rag, call, model, conversation, sampling):
                yield event
            # Small models shown a tool call and its result tend to answer with another tool call
            # written as text; passages placed in the user's own message they simply use.
            conversation.pop()
            if state.last_result is not None and state.last_result.hits:
                conversation[-1] = {**conversation[-1],
                                    "content": await grounded_question(state.last_result, query, model,
                                                                       conversation, sampling)}

        final: Completion | None = None
        # Under a response_format the answer must take its shape, so the model writes even this one.
        if rag and rag.mode == "retrieve_first" and state.last_result is not None and not state.last_result.hits \
                and not client_tools and _structured(config) is None:
            # Nothing in the documents is close enough: a small model would answer from memory (or invent).
            final = Completion(text=NO_CONTEXT_ANSWER)
            async for event in self._fixed_inference_step(state, final):
                yield event
            async for event in self._finish(agent, session, state, final):
                yield event
            return
        loop = _Loop(state, conversation, rag, tools, client_tools, _tool_choice(config), max_iters)
        async for event in self._run_loop(agent, session, loop, model, sampling, api_key):
            yield event

    async def _run_loop(self, agent: dict[str, Any], session: dict[str, Any], loop: _Loop, model: Any,
                        sampling: Sampling, api_key: str | None) -> AsyncIterator[dict[str, Any]]:
        """Inference steps and the tools they call, until an answer, a call of a client's tool (the
        turn then waits for its result: resume_turn), or max_infer_iters."""
        state, conversation = loop.state, loop.conversation
        structured = _structured(agent["agent_config"])
        final: Completion | None = None
        while loop.iters_left > 0:
            loop.iters_left -= 1
            choice = loop.tool_choice if loop.first else "auto"
            loop.first = False
            tools = None if choice == "none" else loop.tools
            messages = conversation
            if tools and choice not in ("auto", "none"):
                # A small model does not honour tool_choice by itself; it is said in words too.
                wanted = "one of the tools" if choice == "required" else f"the tool {choice}"
                messages = conversation + [{"role": "system", "content": f"Answer by calling {wanted}."}]
            completion: Completion | None = None
            async for event in self._inference_step(state, model, messages, sampling, tools, api_key,
                                                    _openai_choice(choice) if tools else None, structured):
                if isinstance(event, Completion):
                    completion = event
                else:
                    yield event
            assert completion is not None
            final = completion
            if not completion.tool_calls:
                break
            client_calls = [c for c in completion.tool_calls if c["tool_name"] in loop.client_tools]
            if loop.rag is None and not client_calls:
                break
            conversation.append(to_openai(completion.message(), "assistant"))
            for call in completion.tool_calls:
                if call["tool_name"] not in loop.client_tools:
                    # Each result follows the assistant message that asked for it.
                    async for event in self._run_knowledge_search(state, loop.rag, call, model, conversation,
                                                                  sampling):
                        yield event
            if client_calls:
                loop.awaiting = client_calls
                session.setdefault("pending", {})[state.turn_id] = loop.dump()
                self._save_session(agent, session)
                output = {**completion.message(), "stop_reason": "end_of_message", "tool_calls": client_calls}
                yield {"event_type": "turn_awaiting_input", "turn": state.turn(output)}
                return
        async for event in self._finish(agent, session, state, final):
            yield event

    async def _finish(self, agent: dict[str, Any], session: dict[str, Any], state: TurnState,
                      final: Completion | None) -> AsyncIterator[dict[str, Any]]:
        """final None: a resumed turn had no inference left (max_infer_iters)."""
        output = final.message() if final is not None else {}
        if final is None or final.tool_calls:
            # max_infer_iters ran out while the model still wanted tools: answer with what we have.
            output = {"role": "assistant", "content": "", "stop_reason": "out_of_tokens", "tool_calls": []}
        turn = state.turn(output)
        found = await self._attribution.check(content_as_text(output.get("content") or "", "content"),
                                              searched_passages(state.steps))
        if found is not None:
            turn["citations"] = [sentence.wire() for sentence in found]
        session.get("pending", {}).pop(state.turn_id, None)
        session["turns"].append(turn)
        self._save_session(agent, session)
        yield {"event_type": "turn_complete", "turn": turn}

    def prepare_resume(self, agent_id: str, session_id: str, turn_id: str,
                       tool_responses: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], _Loop]:
        """Check a resume before any event is streamed: the turn must be waiting, and every tool
        call it waits for must get its response."""
        agent = self.get_agent(agent_id)
        session = self.get_session(agent_id, session_id)
        pending = (session.get("pending") or {}).get(turn_id)
        if pending is None:
            self.get_turn(agent_id, session_id, turn_id)  # 404 for a turn that does not exist
            raise BadRequest(f"turn {turn_id!r} is complete: it waits for no tool responses; start a new turn")
        loop = _Loop.load(pending)
        given = {r["call_id"]: r for r in tool_responses}
        waited = [c["call_id"] for c in loop.awaiting]
        missing = [i for i in waited if i not in given]
        if missing:
            raise BadRequest(f"tool_responses must answer every call the turn waits for; missing call_id "
                             f"{', '.join(missing)}")
        unknown = [i for i in given if i not in waited]
        if unknown:
            raise BadRequest(f"tool_responses name calls this turn did not make: {', '.join(unknown)}")
        loop.responses = [given[c["call_id"]] for c in loop.awaiting]
        return agent, session, loop

    async def resume_turn(self, agent: dict[str, Any], session: dict[str, Any], loop: _Loop,
                          api_key: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The client's tool results as the tool_execution step, then the turn goes on."""
        model, sampling = self._model_and_sampling(agent["agent_config"])
        state, step_id, started = loop.state, str(uuid.uuid4()), now()
        yield {"event_type": "step_start", "step_type": "tool_execution", "step_id": step_id, "metadata": {}}
        responses = [{"call_id": r["call_id"], "tool_name": r["tool_name"], "content": r["content"],
                      "metadata": r.get("metadata") or {}} for r in loop.responses]
        yield self._complete(state, "tool_execution", step_id, started,
                             {"tool_calls": loop.awaiting, "tool_responses": responses})
        for response in responses:
            loop.conversation.append(to_openai({"role": "tool", "call_id": response["call_id"],
                                                "content": response["content"]}, "tool_responses"))
        loop.awaiting, loop.responses = [], []
        async for event in self._run_loop(agent, session, loop, model, sampling, api_key):
            yield event

    def _model_and_sampling(self, config: dict[str, Any]) -> tuple[Any, Sampling]:
        model = self._models.chat_model(config["model"])
        return model, Sampling.of(SamplingParams.model_validate(config.get("sampling_params") or {}))

    async def _history(self, config: dict[str, Any], session: dict[str, Any], model: Any) -> list[dict[str, Any]]:
        """Instructions and earlier turns; the oldest turns give way when they would take more
        than half of the model's context, so the new question and its passages always fit."""
        system = [{"role": "system", "content": config["instructions"]}] if config.get("instructions") else []
        turns = []
        for turn in session["turns"]:
            messages = [to_openai(m, "history") for m in turn["input_messages"]]
            messages.append({"role": "assistant", "content": content_as_text(turn["output_message"]["content"], "")})
            turns.append(messages)
        while turns and await model.count_tokens(system + [m for t in turns for m in t]) > model.context_window // 2:
            turns.pop(0)
        return system + [m for t in turns for m in t]

    def _search_tool(self) -> dict[str, Any]:
        spec = next(t for t in TOOLGROUPS[RAG_TOOLGROUP] if t.name == "knowledge_search")
        return tool_definition_to_openai({
            "tool_name": spec.name, "description": spec.description,
            "parameters": {p.name: {"param_type": p.parameter_type, "description": p.description, "required": True}
                           for p in spec.parameters},
        })

    def _complete(self, state: TurnState, step_type: str, step_id: str, started: str,
                  details: dict[str, Any]) -> dict[str, Any]:
        step = {"turn_id": state.turn_id, "step_id": step_id, "started_at": started, "completed_at": now(),
                "step_type": step_type, **details}
        state.steps.append(step)
        return {"event_type": "step_complete", "step_type": step_type, "step_id": step_id, "step_details": step}

    async def _fixed_inference_step(self, state: TurnState, completion: Completion) -> AsyncIterator[dict[str, Any]]:
        """An inference step whose output the server decides (the retrieve-first tool call, a refusal)."""
        step_id, started = str(uuid.uuid4()), now()
        yield {"event_type": "step_start", "step_type": "inference", "step_id": step_id, "metadata": {}}
        if completion.text:
            yield {"event_type": "step_progress", "step_type": "inference", "step_id": step_id,
                   "delta": {"type": "text", "text": completion.text}}
        for call in completion.tool_calls:
            yield {"event_type": "step_progress", "step_type": "inference", "step_id": step_id,
                   "delta": {"type": "tool_call", "tool_call": call, "parse_status": "succeeded"}}
        yield self._complete(state, "inference", step_id, started, {"model_response": completion.message()})

    async def _inference_step(self, state: TurnState, model: Any, conversation: list[dict[str, Any]],
                              sampling: Sampling, tools: list[dict[str, Any]] | None, api_key: str | None,
                              tool_choice: Any = None, structured: StructuredOutput | None = None,
                              ) -> AsyncIterator[dict[str, Any] | Completion]:
        step_id, started = str(uuid.uuid4()), now()
        yield {"event_type": "step_start", "step_type": "inference", "step_id": step_id, "metadata": {}}
        completion: Completion | None = None
        async for item in generate(model, conversation, sampling, tools or None,
                                   (tool_choice or "auto") if tools else None, api_key, structured):
            if isinstance(item, Delta):
                yield {"event_type": "step_progress", "step_type": "inference", "step_id": step_id,
                       "delta": {"type": "text", "text": item.text}}
            else:
                completion = item
        assert completion is not None
        for call in completion.tool_calls:
            yield {"event_type": "step_progress", "step_type": "inference", "step_id": step_id,
                   "delta": {"type": "tool_call", "tool_call": call, "parse_status": "succeeded"}}
        yield self._complete(state, "inference", step_id, started, {"model_response": completion.message()})
        yield completion

    async def _run_knowledge_search(self, state: TurnState, rag: RAGTool | None, call: dict[str, Any], model: Any,
                                    conversation: list[dict[str, Any]], sampling: Sampling) -> AsyncIterator[dict]:
        step_id, started = str(uuid.uuid4()), now()
        yield {"event_type": "step_start", "step_type": "tool_execution", "step_id": step_id, "metadata": {}}
        yield {"event_type": "step_progress", "step_type": "tool_execution", "step_id": step_id,
               "delta": {"type": "tool_call", "tool_call": call, "parse_status": "in_progress"}}
        if call["tool_name"] != "knowledge_search" or rag is None:
            content: Any = f"Unknown tool {call['tool_name']!r}; it is not a tool of this agent."
            metadata: dict[str, Any] = {}
        else:
            query = str(call["arguments"].get("query") or "")
            config = self._rag.config(rag.query_config)
            config.max_tokens_in_context = await self._context_room(model, conversation, sampling, config)
            started_search = time.perf_counter()
            result = await self._rag.knowledge_search(rag.vector_db_ids, query, config)
            state.last_result = result
            log.info("knowledge_search %r: %d chunks in %.0f ms", query[:60], len(result.metadata["document_ids"]),
                     (time.perf_counter() - started_search) * 1000)
            content = result.content or "knowledge_search tool found no relevant chunks."
            metadata = result.metadata
            for doc_id in result.metadata["document_ids"]:
                if doc_id not in state.sources:
                    state.sources.append(doc_id)
        response = {"call_id": call["call_id"], "tool_name": call["tool_name"], "content": content,
                    "metadata": metadata}
        yield self._complete(state, "tool_execution", step_id, started,
                             {"tool_calls": [call], "tool_responses": [response]})
        conversation.append(to_openai({"role": "tool", "call_id": call["call_id"], "content": content}, "tool"))

    async def _context_room(self, model: Any, conversation: list[dict[str, Any]], sampling: Sampling,
                      config: RAGQueryConfig) -> int:
        """Tokens the retrieved text may take: what the toolgroup asks, capped by what the model can hold."""
        used = await model.count_tokens(conversation)
        answer = sampling.max_tokens or DEFAULT_ANSWER_TOKENS
        # Retrieved text is counted in embedding-model tokens; leave a quarter spare for the
        # difference to the chat model's tokenizer and for the result's framing text.
        room = int((model.context_window - used - answer) * 0.75)
        return max(MIN_CONTEXT_TOKENS, min(config.max_tokens_in_context, room))


def searched_passages(steps: list[dict[str, Any]]) -> list[Passage]:
    """What knowledge_search returned in the turn, in order: a citation's `passage` indexes this list."""
    passages = []
    responses = [r for step in steps if step["step_type"] == "tool_execution" for r in step["tool_responses"]]
    for response in responses:
        if response["tool_name"] == "knowledge_search":
            metadata = response.get("metadata") or {}
            passages += [Passage(d, c) for d, c in zip(metadata.get("document_ids") or [],
                                                       metadata.get("chunks") or [])]
    return passages


async def grounded_question(result: RAGResult, question: str, model: Any, conversation: list[dict[str, Any]],
                      sampling: Sampling) -> str:
    """The user's question with the retrieved passages before it.

    Each passage is the best-matching embedding window of a chunk (~250 tokens) under its document's
    title, not the whole chunk: a small model answers better from less, focused text, and faster.
    """
    room = model.context_window - await model.count_tokens(conversation) - (sampling.max_tokens or DEFAULT_ANSWER_TOKENS) - 64
    titles = [hit.chunk.get("title") or hit.document_id for hit in result.hits]
    passages: list[str] = []
    for hit, title in zip(result.hits, titles):
        text = hit.window_text or content_as_text(hit.chunk.get("content"), "content")
        passage = f"Document: {title}\n{text.strip()}"
        if await model.count_text("\n\n".join(passages + [passage])) > room:
            break
        passages.append(passage)
    names = "; ".join(dict.fromkeys(titles[: len(passages)]))
    body = "\n\n".join(passages)
    return f"Excerpts from these documents: {names}.\n\n{body}\n\nUsing the excerpts above, answer: {question}"


@dataclass
class _Loop:
    """Where a turn's tool loop stands; stored with the session while the turn waits for a client's
    tool results, so that the resume (on any replica) goes on from here."""

    state: TurnState
    conversation: list[dict[str, Any]]
    rag: RAGTool | None
    tools: list[dict[str, Any]]
    client_tools: dict[str, Any]
    tool_choice: str
    iters_left: int
    first: bool = True
    awaiting: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)

    def dump(self) -> dict[str, Any]:
        state = self.state
        return {"state": {"turn_id": state.turn_id, "session_id": state.session_id,
                          "input_messages": state.input_messages, "started_at": state.started_at,
                          "steps": state.steps, "sources": state.sources},
                "conversation": self.conversation,
                "rag": None if self.rag is None else {"vector_db_ids": self.rag.vector_db_ids, "mode": self.rag.mode,
                                                      "query_config": self.rag.query_config.model_dump(mode="json")
                                                      if self.rag.query_config else None},
                "tools": self.tools, "client_tools": self.client_tools, "tool_choice": self.tool_choice,
                "iters_left": self.iters_left, "first": self.first, "awaiting": self.awaiting}

    @classmethod
    def load(cls, data: dict[str, Any]) -> _Loop:
        rag = data.get("rag")
        return cls(TurnState(**data["state"]), data["conversation"],
                   None if rag is None else RAGTool(rag["vector_db_ids"], RAGQueryConfigIn.model_validate(
                       rag["query_config"]) if rag.get("query_config") else None, rag["mode"]),
                   data["tools"], data["client_tools"], data["tool_choice"], data["iters_left"],
                   first=data["first"], awaiting=data["awaiting"])


_RESPONSE_FORMAT = TypeAdapter(LlamaResponseFormat)


def _structured(config: dict[str, Any]) -> StructuredOutput | None:
    """The agent's response_format, which holds its answers (the config was checked at creation)."""
    raw = config.get("response_format")
    if raw is None:
        return None
    try:
        return structured_output(_RESPONSE_FORMAT.validate_python(raw))
    except ValidationError as exc:
        raise bad_request_from(exc, "agent_config.response_format") from None


def _check_format_without_tools(rag: RAGTool | None, client_tools: list[str]) -> None:
    """A response_format holds the answer, but a model offered tools may answer with a call instead,
    and which inference is the answer is known only after it: so not both."""
    offered = list(client_tools) + (["knowledge_search (builtin::rag, retrieval model_decides)"]
                                    if rag is not None and rag.mode == "model_decides" else [])
    if offered:
        raise BadRequest(f"response_format holds an agent's answer and cannot be combined with tools the model "
                         f"may call ({', '.join(offered)}); use builtin::rag with retrieval retrieve_first, "
                         "or drop response_format")


def _tool_choice(config: dict[str, Any]) -> str:
    """auto | required | none | a tool's name; tool_config's, else the deprecated top-level field."""
    return (config.get("tool_config") or {}).get("tool_choice") or config.get("tool_choice") or "auto"


def _openai_choice(choice: str) -> Any:
    if choice in ("auto", "required", "none"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _client_tool_to_openai(tool: dict[str, Any]) -> dict[str, Any]:
    """A client's ToolDef ({name, description, parameters: [{name, parameter_type, description,
    required}]}) as an OpenAI function tool."""
    return tool_definition_to_openai({
        "tool_name": tool["name"], "description": tool.get("description") or "",
        "parameters": {p.get("name"): {"param_type": p.get("parameter_type") or "string",
                                       "description": p.get("description") or "", "required": p.get("required", True)}
                       for p in tool.get("parameters") or [] if isinstance(p.get("name"), str)},
    })
