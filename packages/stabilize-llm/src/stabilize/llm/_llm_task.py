"""LLMTask: one model call as a workflow stage."""

from __future__ import annotations

from typing import Any

from stabilize.errors import TransientError
from stabilize.events import emit_progress
from stabilize.llm._client import LLMClient
from stabilize.llm._retry import DEFAULT_RETRY_TIMEOUT, retry_budget, retry_or_give_up
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
from stabilize.tasks import ContextReader
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
        llm_retry_timeout_seconds: This stage's retry budget (see ``retry_timeout``).

    Outputs: ``{output_key}``, ``llm_usage`` (prompt, completion and total tokens),
    ``llm_workflow_usage`` (the workflow's spending up to and including this stage) and
    ``llm_raw`` (the provider's JSON).

    Errors follow the client: server errors, timeouts and connection failures are retried
    with backoff for ``retry_timeout`` seconds, then fail the stage with the provider's
    status and message; rate limits (429) are retried by the engine as long as it retries
    any transient error; other refusals fail the stage at once with the provider's message.

    Args:
        client: The client to use (default: built from the stage context).
        retry_timeout: Seconds a failing call is retried before the stage fails (30).
    """

    def __init__(
        self, client: LLMClient | None = None, *, retry_timeout: float = DEFAULT_RETRY_TIMEOUT
    ) -> None:
        if retry_timeout < 0:
            raise ValueError(f"retry_timeout must be >= 0, got {retry_timeout!r}")
        self.client = client
        self.retry_timeout = retry_timeout

    @property
    def aliases(self) -> list[str]:
        """``chat``."""
        return ["chat"]

    def execute(self, stage: StageExecution) -> TaskResult:
        """Make the call (unless the budget forbids it) and return the answer.

        Args:
            stage: The stage; its context holds the prompt (or messages), the model
                settings and ``output_key``.

        Returns:
            A success with the answer under ``output_key``, the token usage and
            ``llm_raw``; or ``suspend()`` when the token budget would be exceeded.

        Raises:
            TaskConfigError: A context key is missing or malformed, naming it.
            TransientError: The call failed transiently; it is retried.
            LLMError: The model refused the call, or kept failing past the retry timeout.
        """
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
            response = call_model(
                stage, client, messages, None, options, stream, retry_timeout=self.retry_timeout
            )
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
    *,
    retry_timeout: float = DEFAULT_RETRY_TIMEOUT,
) -> ChatResponse:
    """One model call; when streaming, publish each piece of text as it arrives.

    A transient failure is retried (raised as a :class:`TransientError` with a delay)
    until the call has failed for ``retry_timeout`` seconds (or the stage's
    ``llm_retry_timeout_seconds``); then it raises :class:`LLMError`.
    """
    try:
        return _call(stage, client, messages, tools, options, stream)
    except TransientError as exc:
        # The conversation's length names the call: an agent's next step starts afresh.
        call = str(len(messages))
        raised = retry_or_give_up(stage, exc, call, retry_budget(stage, retry_timeout))
        if raised is exc:
            raise
        raise raised from exc


def _call(
    stage: StageExecution,
    client: LLMClient,
    messages: list[ChatMessage],
    tools: list[dict[str, Any]] | None,
    options: dict[str, Any],
    stream: bool,
) -> ChatResponse:
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
