"""The two wire formats: OpenAI chat completions and the Ollama chat API.

Pure functions from messages to request bodies and from response JSON (whole or streamed)
to :class:`ChatResponse`; the client adds the HTTP around them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stabilize.llm._types import ChatMessage, ChatResponse, ToolCall, Usage, decode_arguments

APIS = ("openai", "ollama")

# Ollama takes these at the top level of the request; every other option goes under "options".
_OLLAMA_TOP_LEVEL = frozenset({"format", "keep_alive", "think"})


def path_for(api: str) -> str:
    """The chat endpoint, relative to the base URL."""
    return "/chat/completions" if api == "openai" else "/api/chat"


def request_body(
    api: str,
    model: str,
    messages: Sequence[ChatMessage],
    tools: Sequence[Mapping[str, Any]] | None,
    temperature: float | None,
    options: Mapping[str, Any],
    stream: bool,
) -> dict[str, Any]:
    """The JSON body of a chat request."""
    body: dict[str, Any] = {"model": model, "stream": stream}
    if api == "openai":
        body["messages"] = [_openai_message(m) for m in messages]
        if tools:
            body["tools"] = [dict(t) for t in tools]
        if temperature is not None:
            body["temperature"] = temperature
        if stream:
            body["stream_options"] = {"include_usage": True}
        body.update(options)
        return body
    body["messages"] = [_ollama_message(m) for m in messages]
    if tools:
        body["tools"] = [dict(t) for t in tools]
    model_options = {k: v for k, v in options.items() if k not in _OLLAMA_TOP_LEVEL}
    body.update({k: v for k, v in options.items() if k in _OLLAMA_TOP_LEVEL})
    if temperature is not None:
        model_options["temperature"] = temperature
    if model_options:
        body["options"] = model_options
    return body


def _openai_message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None and m.role != "tool":
        out["name"] = m.name
    return out


def _ollama_message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": dict(c.arguments)}} for c in m.tool_calls
        ]
    if m.role == "tool" and m.name is not None:
        out["tool_name"] = m.name
    return out


def parse_response(api: str, data: Mapping[str, Any]) -> ChatResponse:
    """A whole (non-streamed) response."""
    if api == "openai":
        choices = data.get("choices") or [{}]
        message = choices[0].get("message") or {}
        usage = data.get("usage") or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    else:
        message = data.get("message") or {}
        prompt, completion = data.get("prompt_eval_count"), data.get("eval_count")
    calls = _calls(message.get("tool_calls") or [])
    return ChatResponse(
        content=message.get("content") or "",
        tool_calls=calls,
        raw=dict(data),
        usage=Usage(int(prompt or 0), int(completion or 0), 1),
    )


def _calls(raw: Sequence[Mapping[str, Any]]) -> list[ToolCall]:
    calls = []
    for i, item in enumerate(raw):
        fn = item.get("function") or {}
        call_id = item.get("id") or f"call_{i}"
        calls.append(
            ToolCall(str(fn.get("name", "")), decode_arguments(fn.get("arguments")), call_id)
        )
    return calls


@dataclass
class StreamAssembler:
    """Joins a streamed response: feed it each decoded chunk, then call :meth:`finish`."""

    api: str
    text: list[str] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=lambda: Usage(calls=1))
    _openai_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    _ollama_calls: list[ToolCall] = field(default_factory=list)

    def feed(self, chunk: Mapping[str, Any]) -> str:
        """Take one chunk; return the text it adds (possibly empty)."""
        self.last = dict(chunk)
        if self.api == "openai":
            return self._feed_openai(chunk)
        message = chunk.get("message") or {}
        self._ollama_calls.extend(_calls(message.get("tool_calls") or []))
        if chunk.get("done"):
            self.usage = Usage(
                int(chunk.get("prompt_eval_count") or 0), int(chunk.get("eval_count") or 0), 1
            )
        delta = message.get("content") or ""
        if delta:
            self.text.append(delta)
        return str(delta)

    def _feed_openai(self, chunk: Mapping[str, Any]) -> str:
        usage = chunk.get("usage")
        if usage:
            self.usage = Usage(
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), 1
            )
        delta_text = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = delta.get("content") or ""
            if piece:
                self.text.append(piece)
                delta_text += piece
            for part in delta.get("tool_calls") or []:
                slot = self._openai_calls.setdefault(
                    int(part.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                )
                slot["id"] = part.get("id") or slot["id"]
                fn = part.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
        return delta_text

    def finish(self) -> ChatResponse:
        """The whole response."""
        if self.api == "openai":
            calls = [
                ToolCall(s["name"], decode_arguments(s["arguments"]), s["id"] or f"call_{i}")
                for i, s in sorted(self._openai_calls.items())
            ]
        else:
            calls = self._ollama_calls
        content = "".join(self.text)
        raw = {**self.last, "content": content}
        return ChatResponse(content, calls, raw, self.usage)


def error_message(body: bytes) -> str:
    """The provider's explanation in an error body (OpenAI ``error.message``, Ollama ``error``)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text[:500]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if data.get("message"):
            return str(data["message"])
    return text[:500]
