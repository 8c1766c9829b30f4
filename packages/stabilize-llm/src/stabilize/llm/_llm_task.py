"""LLMTask: one model call as a workflow stage."""

from __future__ import annotations

from typing import Any

from stabilize.events.recorder import emit_progress
from stabilize.llm._client import LLMClient
from stabilize.llm._stage import (
    call_options,
    check_budget,
    client_for,
    estimate_tokens,
    initial_messages,
    raised_budget_outputs,
    take_budget_decision,
    usage_outputs,
)
from stabilize.llm._types import ChatMessage, ChatResponse, Usage
from stabilize.models.stage import StageExecution
from stabilize.tasks._context import ContextReader
from stabilize.tasks.interface import Task
from stabilize.tasks.result import TaskResult


class LLMTask(Task):
    """Calls a chat model once and writes the answer to the stage outputs.

    Registered as ``llm`` and ``chat``.

    Context keys:
        prompt: The user message (or give ``messages``).
        messages: A whole conversation, a list of ``{role, content}``.
        system: A system message put first.
        temperature: Sampling temperature.
        options: Other model options (``max_tokens``, ``seed``, ``format`` ...).
        model: The model (overrides the injected client's model for this stage).
        base_url, api: Where to send the call when no client was injected. The API key is
            read from the worker's environment, never from the workflow.
        output_key: Where to write the answer (default ``completion``).
        stream: Stream the answer: each piece of text is published to live listeners as a
            ``custom.progress`` event with ``token`` (see :func:`stabilize.emit_progress`).
        llm_token_budget: The workflow's token budget (see :mod:`stabilize.llm`).
        llm_budget_timeout_seconds: How long to wait for a budget decision before stopping.

    Outputs: ``{output_key}``, ``llm_usage`` (prompt, completion and total tokens),
    ``llm_workflow_usage`` (the workflow's spending up to and including this stage) and
    ``llm_raw`` (the provider's JSON).

    Errors follow the client: rate limits, server errors, timeouts and connection failures
    are retried by the engine; other refusals fail the stage with the provider's message.

    Args:
        client: The client to use (default: built from the stage context).
    """

    def __init__(self, client: LLMClient | None = None) -> None:
        self.client = client

    @property
    def aliases(self) -> list[str]:
        """``chat``."""
        return ["chat"]

    def execute(self, stage: StageExecution) -> TaskResult:
        """Make the call (unless the budget forbids it) and return the answer."""
        reader = ContextReader(stage.context, "LLMTask")
        output_key = reader.text("output_key", "completion")
        messages = initial_messages(reader)
        stream = reader.flag("stream", False)
        options = call_options(reader, self.client)
        client = client_for(reader, self.client)
        try:
            decided, context = take_budget_decision(stage, reader, usage_outputs(stage, Usage()))
            if decided is not None:
                return decided
            suspended = check_budget(stage, reader, Usage(), estimate_tokens(messages, None))
            if suspended is not None:
                return suspended
            response = call_model(stage, client, messages, None, options, stream)
        finally:
            if client is not self.client:
                client.close()
        outputs: dict[str, Any] = {
            output_key: response.content,
            **usage_outputs(stage, response.usage),
            "llm_raw": response.raw,
            **raised_budget_outputs(stage),
        }
        return TaskResult.success(outputs=outputs, context=context)


def call_model(
    stage: StageExecution,
    client: LLMClient,
    messages: list[ChatMessage],
    tools: list[dict[str, Any]] | None,
    options: dict[str, Any],
    stream: bool,
) -> ChatResponse:
    """One model call; when streaming, publish each piece of text as it arrives."""
    if not stream:
        return client.chat(messages, tools, **options)
    final: ChatResponse | None = None
    for item in client.stream(messages, tools, **options):
        if isinstance(item, str):
            emit_progress(stage, "", token=item)
        else:
            final = item
    assert final is not None  # stream() always ends with the whole response
    return final
