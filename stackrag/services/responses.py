"""The Responses API with file_search, and conversations, over the same retrieval and models.

file_search runs first with the user's message (as builtin::rag does in agents), the model answers
from the best passages, and each answer sentence those passages support cites their files
(file_citation annotations at the sentence's end, found by services/citations.py, not by markers
the model would have to write).
Responses and conversation items are kept in the registry, so previous_response_id and
conversations work across restarts.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, AsyncIterator

from ..content.text import content_as_text
from ..errors import BadRequest, NotFound
from ..providers.protocols import Hit
from ..storage.registry import Registry
from . import tenancy
from ..wire.openai import FileSearchTool, ResponseCreate
from .agents import grounded_question
from .citations import Attribution, Passage, Sentence
from .inference import Completion, Delta, Sampling, generate, structured_output
from .models import ModelService
from .retrieval import RAGResult
from .vector_stores import SearchResult, VectorStoreService

RESPONSES = "responses"
CONVERSATIONS = "conversations"
CONVERSATION_ITEMS = "conversation_items"
DEFAULT_RESULTS = 10
# Passages shown to the model: the best few; more only dilute a small model's attention.
PASSAGES = 5


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def input_messages(value: Any) -> list[dict[str, Any]]:
    """Responses `input`: a string or a list of message items ({role, content} or {type: message, ...})."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadRequest("input must be a string or a non-empty list of messages")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise BadRequest(f"input[{i}] must be an object")
        if item.get("type", "message") != "message":
            continue  # earlier tool items carry nothing the local loop needs
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise BadRequest(f"input[{i}].role must be user, assistant, system or developer")
        items.append({"type": "message", "role": role, "content": _text(item.get("content"), f"input[{i}]")})
    if not items:
        raise BadRequest("input holds no message")
    return items


def _text(content: Any, field: str) -> str:
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part
        )
    return content_as_text(content, field)


def _chat(item: dict[str, Any]) -> dict[str, Any]:
    role = "system" if item["role"] == "developer" else item["role"]
    return {"role": role, "content": item["content"]}


class ResponseService:
    def __init__(self, registry: Registry, models: ModelService, stores: VectorStoreService,
                 attribution: Attribution):
        self._registry = registry
        self._models = models
        self._stores = stores
        self._attribution = attribution

    # -- conversations ------------------------------------------------------------------------

    def create_conversation(self, metadata: dict[str, Any] | None, items: list[dict[str, Any]] | None) -> dict:
        conversation = {"id": _id("conv"), "object": "conversation", "created_at": int(time.time()),
                        "metadata": dict(metadata or {})}
        self._registry.put(CONVERSATIONS, conversation["id"], tenancy.stamp(conversation))
        if items:
            self.add_items(conversation["id"], items)
        return conversation

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        return tenancy.own(self._registry.get(CONVERSATIONS, conversation_id),
                           f"Conversation {conversation_id!r} not found")

    def update_conversation(self, conversation_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
        self.get_conversation(conversation_id)
        stored = self._registry.get(CONVERSATIONS, conversation_id)  # with its owner
        stored["metadata"] = dict(metadata)
        self._registry.put(CONVERSATIONS, conversation_id, stored)
        return tenancy.without_owner(stored)

    def delete_conversation(self, conversation_id: str) -> None:
        self.get_conversation(conversation_id)
        for item in self.items(conversation_id):
            self._registry.delete(CONVERSATION_ITEMS, f"{conversation_id}/{item['id']}")
        self._registry.delete(CONVERSATIONS, conversation_id)

    def items(self, conversation_id: str) -> list[dict[str, Any]]:
        self.get_conversation(conversation_id)
        stored = [i for i in self._registry.list(CONVERSATION_ITEMS) if i["conversation_id"] == conversation_id]
        return [{k: v for k, v in i.items() if k not in ("conversation_id", "position")}
                for i in sorted(stored, key=lambda i: i["position"])]

    def add_items(self, conversation_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        position = len(self.items(conversation_id))
        added = []
        for offset, item in enumerate(input_messages(items)):
            record = {"id": item.get("id") or _id("msg"), "type": "message", "role": item["role"],
                      "status": "completed",
                      "content": [{"type": "input_text" if item["role"] != "assistant" else "output_text",
                                   "text": item["content"]}]}
            self._registry.put(CONVERSATION_ITEMS, f"{conversation_id}/{record['id']}",
                               {**record, "conversation_id": conversation_id, "position": position + offset})
            added.append(record)
        return added

    def get_item(self, conversation_id: str, item_id: str) -> dict[str, Any]:
        for item in self.items(conversation_id):
            if item["id"] == item_id:
                return item
        raise NotFound(f"Item {item_id!r} not found in conversation {conversation_id!r}")

    def delete_item(self, conversation_id: str, item_id: str) -> None:
        self.get_item(conversation_id, item_id)
        self._registry.delete(CONVERSATION_ITEMS, f"{conversation_id}/{item_id}")

    # -- responses ----------------------------------------------------------------------------

    def get(self, response_id: str) -> dict[str, Any]:
        return tenancy.own(self._registry.get(RESPONSES, response_id), f"Response {response_id!r} not found")["response"]

    def input_items(self, response_id: str) -> list[dict[str, Any]]:
        self.get(response_id)
        return self._registry.get(RESPONSES, response_id)["input"]

    def delete(self, response_id: str) -> None:
        self.get(response_id)
        self._registry.delete(RESPONSES, response_id)

    def _history(self, previous_response_id: str | None, conversation: str | None) -> list[dict[str, Any]]:
        if previous_response_id:
            chain: list[dict[str, Any]] = []
            current: str | None = previous_response_id
            while current:
                stored = self._registry.get(RESPONSES, current)
                if not tenancy.sees(stored):
                    raise NotFound(f"previous_response_id {current!r} not found")
                answer = _output_text(stored["response"])
                chain = stored["input"] + [{"type": "message", "role": "assistant", "content": answer}] + chain
                current = stored["response"].get("previous_response_id")
            return chain
        if conversation:
            return [{"type": "message", "role": i["role"], "content": _text(i["content"], "item")}
                    for i in self.items(conversation)]
        return []

    def _file_search(self, tools: list[FileSearchTool] | None) -> FileSearchTool | None:
        for tool in tools or []:
            for store_id in tool.vector_store_ids:
                self._stores.get(store_id)
            return tool
        return None

    async def create(self, request: ResponseCreate, api_key: str | None) -> AsyncIterator[dict[str, Any]]:
        """Yield the stream's events; the last one is response.completed (or response.failed)."""
        body = request.model_dump(mode="json", exclude_none=True)
        model_id = request.model
        model = self._models.chat_model(model_id)
        new_items = input_messages(body.get("input"))
        if body.get("previous_response_id") and body.get("conversation"):
            raise BadRequest("give previous_response_id or conversation, not both")
        conversation = body.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        history = self._history(body.get("previous_response_id"), conversation)
        file_search = self._file_search(request.tools)
        include = body.get("include") or []
        sampling = Sampling(temperature=float(body.get("temperature") or 0.0), top_p=body.get("top_p"),
                            max_tokens=body.get("max_output_tokens"))
        text_format = request.text.format if request.text else None
        structured = structured_output(text_format)
        # Echoed as given, as the reference does (the client compares it with what it sent).
        echoed = text_format.model_dump(mode="json", by_alias=True, exclude_none=True) if text_format else {"type": "text"}
        response = {
            "id": _id("resp"), "object": "response", "created_at": int(time.time()), "model": model_id,
            "status": "in_progress", "output": [], "text": {"format": echoed},
            "instructions": body.get("instructions"), "tools": body.get("tools") or [],
            "tool_choice": "auto", "parallel_tool_calls": False, "previous_response_id": body.get("previous_response_id"),
            "conversation": {"id": conversation} if conversation else None,
            "temperature": sampling.temperature, "top_p": sampling.top_p, "metadata": body.get("metadata") or {},
            "error": None, "incomplete_details": None, "usage": None, "store": body.get("store", True),
        }
        seq = _Sequence()
        yield seq.event("response.created", response=dict(response))
        yield seq.event("response.in_progress", response=dict(response))

        messages = ([{"role": "system", "content": body["instructions"]}] if body.get("instructions") else [])
        messages += [_chat(i) for i in history + new_items]
        question = new_items[-1]["content"]
        shown: list[SearchResult] = []
        if file_search is not None:
            call = {"type": "file_search_call", "id": _id("fs"), "status": "in_progress", "queries": [question],
                    "results": None}
            index = len(response["output"])
            yield seq.event("response.output_item.added", output_index=index, item=dict(call))
            yield seq.event("response.file_search_call.in_progress", output_index=index, item_id=call["id"])
            yield seq.event("response.file_search_call.searching", output_index=index, item_id=call["id"])
            results = await self._search(file_search, question)
            call["status"] = "completed"
            if "file_search_call.results" in include:
                call["results"] = [{"file_id": r.file_id, "filename": r.filename, "score": r.score,
                                    "text": r.content[0]["text"], "attributes": r.attributes} for r in results]
            response["output"].append(call)
            yield seq.event("response.file_search_call.completed", output_index=index, item_id=call["id"])
            yield seq.event("response.output_item.done", output_index=index, item=call)
            if results:
                shown = results[:PASSAGES]
                messages[-1] = {"role": "user", "content": await grounded_question(_as_rag_result(shown), question,
                                                                                   model, messages[:-1], sampling)}

        message = {"type": "message", "id": _id("msg"), "role": "assistant", "status": "in_progress", "content": []}
        index = len(response["output"])
        yield seq.event("response.output_item.added", output_index=index, item=dict(message))
        part = {"type": "output_text", "text": "", "annotations": []}
        yield seq.event("response.content_part.added", output_index=index, item_id=message["id"], content_index=0,
                        part=dict(part))
        completion: Completion | None = None
        async for item in generate(model, messages, sampling, api_key=api_key, structured=structured):
            if isinstance(item, Delta):
                yield seq.event("response.output_text.delta", output_index=index, item_id=message["id"],
                                content_index=0, delta=item.text)
            else:
                completion = item
        assert completion is not None
        text = completion.text
        # Llama Stack 0.7.1 streams no response.output_text.annotation.added: the annotations arrive
        # with the finished part, item and response, and so they do here.
        found = await self._attribution.check(text, [Passage(r.file_id, _shown_text(r), r.filename) for r in shown])
        part = {"type": "output_text", "text": text, "annotations": file_citations(found or [], shown)}
        yield seq.event("response.output_text.done", output_index=index, item_id=message["id"], content_index=0,
                        text=text)
        yield seq.event("response.content_part.done", output_index=index, item_id=message["id"], content_index=0,
                        part=part)
        message.update(status="completed", content=[part])
        response["output"].append(message)
        yield seq.event("response.output_item.done", output_index=index, item=message)

        input_tokens = await model.count_tokens(messages)
        output_tokens = await model.count_text(text) if text else 0
        response.update(status="completed" if completion.stop_reason != "out_of_tokens" else "incomplete",
                        usage={"input_tokens": input_tokens, "output_tokens": output_tokens,
                               "total_tokens": input_tokens + output_tokens})
        if response["status"] == "incomplete":
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        if response["store"]:
            self._registry.put(RESPONSES, response["id"], tenancy.stamp({"response": response, "input": new_items}))
        if conversation:
            self.add_items(conversation, new_items + [{"role": "assistant", "content": text}])
        yield seq.event("response.completed", response=response)

    async def _search(self, tool: FileSearchTool, question: str) -> list[SearchResult]:
        limit = tool.max_num_results or DEFAULT_RESULTS
        results: list[SearchResult] = []
        for store_id in tool.vector_store_ids:
            page = await self._stores.search(store_id, question, tool.filters, limit, tool.ranking_options, None)
            results += page.results
        return sorted(results, key=lambda r: r.score, reverse=True)[:limit]


def _output_text(response: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for item in response["output"] if item["type"] == "message"
                   for part in item["content"])


def _shown_text(result: SearchResult) -> str:
    return result.passage or result.content[0]["text"]


def file_citations(found: list[Sentence], shown: list[SearchResult]) -> list[dict[str, Any]]:
    """One annotation per supported sentence and file, at the sentence's end: where OpenAI (and
    Llama Stack, from the model's markers) put a citation, the index of the text just after it."""
    names = {r.file_id: r.filename for r in shown}
    annotations = []
    for sentence in found:
        for file_id in dict.fromkeys(s.source_id for s in sentence.sources):
            annotations.append({"type": "file_citation", "file_id": file_id, "filename": names[file_id],
                                "index": sentence.end})
    return annotations


def _as_rag_result(results: list[SearchResult]) -> RAGResult:
    """Search results as grounded_question reads them (the best window as passage, the filename as title)."""
    hits = [Hit(r.file_id, r.file_id, {"content": r.content[0]["text"], "title": r.filename}, r.score, r.passage)
            for r in results]
    return RAGResult(content=None, metadata={}, hits=hits)


class _Sequence:
    def __init__(self) -> None:
        self.number = 0

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.number += 1
        return {"type": kind, "sequence_number": self.number, **fields}
