"""A deterministic offline model for tests, demos and examples: no network, no keys."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from stabilize.llm._client import LLMClient
from stabilize.llm._types import ChatMessage, ToolCall


@dataclass
class Reply:
    """One scripted answer: some text, some tool calls, or both.

    Attributes:
        content: The text of the answer.
        tool_calls: The tools the model asks for.
    """

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


class ScriptedModel:
    """A chat model that answers from a script, speaking both wire formats.

    The answer to a request is chosen by how many assistant turns its conversation already
    holds: the first request gets ``script[0]``, the request that carries one assistant turn
    gets ``script[1]``, and so on. The answer therefore depends only on the conversation,
    never on how many requests were made, so a re-run after a crash gets the same answer.

    A script item is a string (a final answer), a :class:`ToolCall` or a list of them
    (a turn that calls tools), a :class:`Reply`, or a function of the conversation that
    returns one of those. Usage is counted in words, deterministically.

    Use :meth:`client` for an :class:`LLMClient` wired to it, or :meth:`transport` for the
    ``httpx.MockTransport`` that serves ``/chat/completions`` (OpenAI) and ``/api/chat``
    (Ollama), streaming included.

    Args:
        script: The answers, in order.

    Attributes:
        requests: The JSON body of every request received, in order.
    """

    def __init__(self, script: Sequence[Any]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def client(self, model: str = "scripted", api: str = "openai", **kwargs: Any) -> LLMClient:
        """An :class:`LLMClient` that talks to this model (``api``: openai or ollama).

        Args:
            model: The model name the client sends.
            api: ``openai`` or ``ollama``: the protocol the client speaks.
            **kwargs: Further :class:`LLMClient` arguments (``base_url`` has a default).

        Returns:
            A client whose requests this model answers (and records in ``requests``).
        """
        kwargs.setdefault(
            "base_url", "http://scripted.invalid" + ("/v1" if api == "openai" else "")
        )
        return LLMClient(model, api=api, api_key="", transport=self.transport(), **kwargs)

    def transport(self) -> httpx.MockTransport:
        """An httpx transport answering both APIs from the script."""
        return httpx.MockTransport(self._handle)

    def reply_for(self, messages: list[ChatMessage]) -> Reply:
        """The scripted answer to a conversation.

        The answer is the script's item for the turn: the number of assistant messages
        so far. A callable item is called with the conversation.

        Args:
            messages: The conversation so far.

        Returns:
            The answer, as a :class:`Reply`.

        Raises:
            IndexError: The script has no answer for this turn.
            TypeError: The item (or what a callable item returned) is not a string, tool
                call(s) or Reply.
        """
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn >= len(self.script):
            raise IndexError(f"the script has {len(self.script)} answers; turn {turn + 1} asked")
        item = self.script[turn]
        if callable(item) and not isinstance(item, ToolCall | Reply):
            item = item(messages)
        return _as_reply(item)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        with self._lock:
            self.requests.append(body)
        api = "openai" if request.url.path.endswith("/chat/completions") else "ollama"
        if api == "ollama" and not request.url.path.endswith("/api/chat"):
            return httpx.Response(404, json={"error": f"no route {request.url.path}"})
        messages = [ChatMessage.from_dict(m) for m in body.get("messages") or []]
        try:
            reply = self.reply_for(messages)
        except IndexError as exc:
            error: Any = {"message": str(exc)} if api == "openai" else str(exc)
            return httpx.Response(400, json={"error": error})
        prompt = sum(_words(m.content) for m in messages)
        completion = _words(reply.content) + sum(
            _words(json.dumps(c.arguments)) for c in reply.tool_calls
        )
        model = str(body.get("model", "scripted"))
        if body.get("stream"):
            lines = (_sse if api == "openai" else _ndjson)(model, reply, prompt, completion)
            return httpx.Response(200, content=b"".join(lines))
        payload = (_openai if api == "openai" else _ollama)(model, reply, prompt, completion)
        return httpx.Response(200, json=payload)


def _as_reply(item: Any) -> Reply:
    if isinstance(item, Reply):
        return item
    if isinstance(item, str):
        return Reply(item)
    if isinstance(item, ToolCall):
        return Reply("", [item])
    if isinstance(item, list | tuple) and all(isinstance(c, ToolCall) for c in item):
        return Reply("", list(item))
    raise TypeError(f"a script item must be a str, ToolCall(s) or Reply, not {item!r}")


def _words(text: str) -> int:
    return len(text.split())


def _call_id(call: ToolCall, index: int) -> str:
    return call.id or f"call_{index}"


def _openai(model: str, reply: Reply, prompt: int, completion: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": _call_id(c, i),
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for i, c in enumerate(reply.tool_calls)
        ]
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _ollama(model: str, reply: Reply, prompt: int, completion: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"function": {"name": c.name, "arguments": c.arguments}} for c in reply.tool_calls
        ]
    return {
        "model": model,
        "message": message,
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": prompt,
        "eval_count": completion,
    }


def _pieces(text: str) -> Iterator[str]:
    words = text.split(" ")
    for i, word in enumerate(words):
        yield word if i == len(words) - 1 else word + " "


def _sse(model: str, reply: Reply, prompt: int, completion: int) -> Iterator[bytes]:
    def event(data: Any) -> bytes:
        return f"data: {json.dumps(data)}\n\n".encode()

    base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "model": model}
    if reply.content:
        for piece in _pieces(reply.content):
            yield event({**base, "choices": [{"index": 0, "delta": {"content": piece}}]})
    for i, call in enumerate(reply.tool_calls):
        part = {
            "index": i,
            "id": _call_id(call, i),
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        yield event({**base, "choices": [{"index": 0, "delta": {"tool_calls": [part]}}]})
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    yield event({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _ndjson(model: str, reply: Reply, prompt: int, completion: int) -> Iterator[bytes]:
    def line(data: Any) -> bytes:
        return json.dumps(data).encode() + b"\n"

    if reply.content:
        for piece in _pieces(reply.content):
            delta = {"role": "assistant", "content": piece}
            yield line({"model": model, "message": delta, "done": False})
    if reply.tool_calls:
        calls = [{"function": {"name": c.name, "arguments": c.arguments}} for c in reply.tool_calls]
        turn = {"role": "assistant", "content": "", "tool_calls": calls}
        yield line({"model": model, "message": turn, "done": False})
    yield line(
        {
            "model": model,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "prompt_eval_count": prompt,
            "eval_count": completion,
        }
    )
