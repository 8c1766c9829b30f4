"""LLM calls and durable tool-using agents for stabilize workflows.

:class:`LLMClient` speaks the OpenAI chat-completions API and the Ollama chat API over
httpx (streaming and tool calls included); :class:`LLMTask` makes one model call as a
stage; :class:`AgentLoopTask` runs a bounded ReAct loop that checkpoints every model
response and tool result, so a crash never repeats a completed step. ``@tool`` and
:class:`ToolRegistry` turn plain functions into tools with validated arguments.
:class:`ScriptedModel` is a deterministic offline model for tests and examples.

Importing ``stabilize`` never imports this package: its names are exported lazily
(``from stabilize import LLMClient``) through the ``stabilize.exports`` entry points.
"""

from __future__ import annotations

from stabilize.llm._agent import AgentLoopTask
from stabilize.llm._client import LLMClient
from stabilize.llm._llm_task import LLMTask
from stabilize.llm._scripted import Reply, ScriptedModel
from stabilize.llm._tools import Tool, ToolError, ToolRegistry, ToolResult, tool
from stabilize.llm._types import ChatMessage, ChatResponse, LLMError, ToolCall, Usage

__all__ = [
    "AgentLoopTask",
    "ChatMessage",
    "ChatResponse",
    "LLMClient",
    "LLMError",
    "LLMTask",
    "Reply",
    "ScriptedModel",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "Usage",
    "tool",
]
