"""The values that travel between a workflow and a model: messages, tool calls, usage."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stabilize.errors import PermanentError


class LLMError(PermanentError):
    """The model provider refused a request in a way that retrying cannot fix.

    Raised for 4xx answers other than 429 (a bad model name, a malformed request, a
    missing or wrong key), and for answers that are not the provider's JSON. The message
    carries the provider's own explanation; it never contains the API key.

    Attributes:
        status_code: The HTTP status, when the provider answered.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message, code=status_code)
        self.status_code = status_code


@dataclass
class ToolCall:
    """A model's request to call one tool.

    Attributes:
        name: The tool's name.
        arguments: The arguments, decoded from the provider's JSON.
        id: The provider's id for the call (made up when the provider sends none).
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the one stored in workflow state)."""
        return {"id": self.id, "name": self.name, "arguments": dict(self.arguments)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolCall:
        """The inverse of :meth:`to_dict`; also accepts the OpenAI ``function`` shape.

        Args:
            data: ``{"id", "name", "arguments"}``, or OpenAI's
                ``{"id", "function": {"name", "arguments"}}``.

        Returns:
            The call; arguments that are not a JSON object are kept under ``"_raw"``.
        """
        if "function" in data:
            fn = data["function"]
            return cls(
                str(fn.get("name", "")), decode_arguments(fn.get("arguments")), data.get("id") or ""
            )
        return cls(
            str(data.get("name", "")), decode_arguments(data.get("arguments")), data.get("id") or ""
        )


def decode_arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments as a dict: OpenAI sends a JSON string, Ollama an object.

    A string that is not a JSON object is kept under ``"_raw"`` so that validation can
    report it to the model instead of failing the task.
    """
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return {"_raw": raw}
        return dict(value) if isinstance(value, dict) else {"_raw": raw}
    return {"_raw": raw}


@dataclass
class ChatMessage:
    """One message of a conversation.

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        content: The text (empty for an assistant turn that only calls tools).
        tool_calls: The tools an assistant turn asks for.
        tool_call_id: For a ``tool`` message: the call it answers.
        name: For a ``tool`` message: the tool's name.
    """

    role: str
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready, provider-neutral form (the one stored in workflow state)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatMessage:
        """Read a message in the neutral form or in either provider's form.

        Args:
            data: A message as :meth:`to_dict`, OpenAI or Ollama write it.

        Returns:
            The message (role ``user`` when none is given).
        """
        content = data.get("content")
        return cls(
            role=str(data.get("role", "user")),
            content="" if content is None else str(content),
            tool_calls=[ToolCall.from_dict(c) for c in data.get("tool_calls") or []],
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name") or data.get("tool_name"),
        )


def as_message(value: ChatMessage | Mapping[str, Any]) -> ChatMessage:
    """Accept a :class:`ChatMessage` or a dict with ``role`` and ``content``."""
    return value if isinstance(value, ChatMessage) else ChatMessage.from_dict(value)


@dataclass
class Usage:
    """Tokens spent, as the provider counts them.

    Attributes:
        prompt_tokens: Tokens read (OpenAI ``prompt_tokens``, Ollama ``prompt_eval_count``).
        completion_tokens: Tokens written (OpenAI ``completion_tokens``, Ollama ``eval_count``).
        calls: How many model calls these numbers cover.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.calls + other.calls,
        )

    def to_dict(self) -> dict[str, int]:
        """The form written to stage outputs (``llm_usage``)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "calls": self.calls,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Usage:
        """Read :meth:`to_dict`'s form; anything else counts as nothing.

        Args:
            data: What :meth:`to_dict` returned, or anything.

        Returns:
            The usage (all zeros for anything that is not a mapping).
        """
        if not isinstance(data, Mapping):
            return cls()
        return cls(
            _int(data.get("prompt_tokens")),
            _int(data.get("completion_tokens")),
            _int(data.get("calls")),
        )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


@dataclass
class ChatResponse:
    """What one model call returned.

    Attributes:
        content: The text of the answer.
        tool_calls: The tools the model wants called (empty for a final answer).
        raw: The provider's JSON (for a streamed call: the last chunk, with the text joined).
        usage: The tokens this call spent.
    """

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)

    def message(self) -> ChatMessage:
        """The assistant message to append to the conversation."""
        return ChatMessage("assistant", self.content, list(self.tool_calls))
