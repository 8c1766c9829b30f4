"""AgentLoopTask: a bounded ReAct loop whose every step is checkpointed durably."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from stabilize.events import emit_progress
from stabilize.llm._client import LLMClient
from stabilize.llm._llm_task import call_model
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
from stabilize.llm._tools import TOOL_ERROR_POLICIES, ToolErrorPolicy, ToolRegistry
from stabilize.llm._types import ChatMessage, ToolCall, Usage
from stabilize.models.stage import StageExecution
from stabilize.models.task import KEPT_STATE_KEY
from stabilize.tasks import ContextReader
from stabilize.tasks.interface import RetryableTask
from stabilize.tasks.result import TaskResult

DEFAULT_TIMEOUT = timedelta(days=7)


class AgentLoopTask(RetryableTask):
    """A tool-using agent: the model calls tools until it gives an answer.

    Registered as ``agent``, ``react_agent`` and ``agent_loop``.

    Each execution of the task takes exactly one step, a model call or a tool call, and
    returns ``running`` with the loop's checkpoint as the task's state
    (``TaskExecution.state``, read as ``stage.task_state``: the conversation under
    ``messages``, the ``step`` number, the tool calls still to make under ``pending``, the
    ``invocations`` and the ``usage``). The engine commits that checkpoint and runs the
    task again at once. A worker that dies mid-loop therefore costs at most the step it
    was taking: the next worker resumes from the last committed step and repeats no
    completed model or tool call. A stage run again (a jump back, a restart) starts a new
    conversation, its step numbers going on from the last run's (kept under ``kept``).

    Every tool call is numbered when the model asks for it, and gets the idempotency key
    ``"<workflow id>:<stage id>:<step>"``; a tool with an ``idempotency_key`` parameter
    receives it. A call interrupted by a crash runs again with the same key, so the
    external service can recognise the repeat. Each call is recorded in
    ``tool_invocations`` as ``pending`` when the model asks for it and ``done`` (or
    ``error``) with its result once it ran.

    Context keys: those of :class:`LLMTask` (``prompt``/``messages``, ``system``,
    ``temperature``, ``options``, ``model``, ``stream``, budgets), plus
    ``max_iterations`` (model calls, default 8), ``output_key`` (default ``answer``) and
    ``agent_timeout_seconds`` (the whole loop, default seven days, so that a stage waiting
    for a budget decision has time).

    Outputs: ``{output_key}``, ``tool_invocations`` (``tool``, ``arguments``, ``result``,
    ``idempotency_key``, ``step``, ``status``), ``iterations``, ``usage``, and the usage
    outputs of :class:`LLMTask`. Reaching ``max_iterations`` without an answer ends the
    stage FAILED_CONTINUE. Invalid arguments, unknown tools and a
    :class:`~stabilize.llm.ToolError` are fed back to the model as ``"ERROR: ..."``
    results; a tool raising :class:`~stabilize.TransientError` is retried. Another
    exception from a tool follows ``tool_errors`` (see :meth:`ToolRegistry.dispatch`): by
    default a programming error (``NameError``, ``TypeError``, ``AttributeError``,
    ``ImportError``, ``SyntaxError``, ``NotImplementedError``) fails the stage TERMINAL
    with its traceback, and any other goes to the model. A failing call records nothing:
    the last committed checkpoint stays as it was.

    Args:
        client: The model client (default: built from the stage context).
        tools: The tools the model may call.
        tool_errors: ``"auto"`` (default), ``"model"`` (every exception goes to the
            model) or ``"fail"`` (every exception but :class:`~stabilize.llm.ToolError`
            fails the stage).

    Raises:
        ValueError: ``tool_errors`` is none of these.
    """

    def __init__(
        self,
        client: LLMClient | None = None,
        tools: ToolRegistry | None = None,
        *,
        tool_errors: ToolErrorPolicy = "auto",
    ) -> None:
        if tool_errors not in TOOL_ERROR_POLICIES:
            raise ValueError(
                f"tool_errors must be one of {', '.join(TOOL_ERROR_POLICIES)}, got {tool_errors!r}"
            )
        self.client = client
        self.tools = tools if tools is not None else ToolRegistry()
        self.tool_errors: ToolErrorPolicy = tool_errors

    @property
    def aliases(self) -> list[str]:
        """``react_agent`` and ``agent_loop``."""
        return ["react_agent", "agent_loop"]

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        """Run the next step at once: the pause is only the checkpoint's commit.

        Args:
            stage: The agent's stage.
            duration: The time spent since the loop started.

        Returns:
            Zero.
        """
        return timedelta(0)

    def get_timeout(self) -> timedelta:
        """Seven days for the whole loop (``agent_timeout_seconds`` overrides it)."""
        return DEFAULT_TIMEOUT

    def get_dynamic_timeout(self, stage: StageExecution) -> timedelta:
        """``agent_timeout_seconds`` from the stage context, else :meth:`get_timeout`.

        Args:
            stage: The agent's stage.

        Returns:
            The limit for the whole loop, counted from its first step.

        Raises:
            TaskConfigError: ``agent_timeout_seconds`` is not a number of at least 0.
        """
        seconds = ContextReader(stage.context, "AgentLoopTask").number(
            "agent_timeout_seconds", None, minimum=0
        )
        return timedelta(seconds=seconds) if seconds is not None else self.get_timeout()

    def execute(self, stage: StageExecution) -> TaskResult:
        """Take the next step of the loop.

        One step is one model call or one tool call; its state is checkpointed as the
        task's state, so a crash repeats at most the step in flight.

        Args:
            stage: The agent's stage; its context holds the prompt, the model settings,
                ``max_iterations`` and the checkpoint.

        Returns:
            ``running()`` with the checkpoint while the loop goes on, a success with the
            final answer under ``output_key``, FAILED_CONTINUE when ``max_iterations``
            ran out without an answer, or ``suspend()`` when the token budget is spent.

        Raises:
            TaskConfigError: A context key is missing or malformed, naming it.
            TransientError: The model call failed transiently; it is retried.
            LLMError: The model refused the call, or kept failing past the retry timeout.
        """
        reader = ContextReader(stage.context, "AgentLoopTask")
        output_key = reader.text("output_key", "answer")
        max_iterations = reader.number("max_iterations", 8, minimum=1, integer=True)
        stream = reader.flag("stream", False)
        options = call_options(reader, self.client)
        committed = stage.task_state
        # A copy: a step that raises (a failing tool) must leave the stage's checkpoint as
        # it was, not half-updated in memory.
        state = _private_copy(committed) if "messages" in committed else _fresh(reader, committed)
        usage = Usage.from_dict(state["usage"])
        decided, context = take_budget_decision(
            stage, reader, _outputs(stage, state, output_key, None)
        )
        if decided is not None:
            return decided
        if state["pending"]:
            self._run_tool(stage, state)
            return TaskResult.running(context=context, state=_checkpoint(state))
        if state["iterations"] >= max_iterations:
            error = (
                f"agent stage {stage.ref_id!r} reached max_iterations ({max_iterations}) "
                "without a final answer"
            )
            outputs = _outputs(stage, state, output_key, _last_text(state))
            return TaskResult.failed_continue(error, outputs=outputs, context=context)
        messages = [ChatMessage.from_dict(m) for m in state["messages"]]
        schemas = self.tools.schemas() or None
        suspended = check_budget(stage, reader, usage, estimate_tokens(messages, schemas))
        if suspended is not None:
            return TaskResult.suspend(
                context={**suspended.context, **context},
                signal_timeout=suspended.signal_timeout,
                state=_checkpoint(state),
            )
        client = client_for(reader, self.client)
        try:
            response = call_model(stage, client, messages, schemas, options, stream)
        finally:
            if client is not self.client:
                client.close()
        state["step"] += 1
        state["iterations"] += 1
        state["usage"] = (usage + response.usage).to_dict()
        calls = []
        for call in response.tool_calls:
            state["step"] += 1
            step = state["step"]
            calls.append(ToolCall(call.name, call.arguments, call.id or f"call_{step}"))
            key = f"{stage.workflow_id}:{stage.id}:{step}"
            state["pending"].append({"step": step, "idempotency_key": key})
            state["invocations"].append(
                {
                    "tool": call.name,
                    "arguments": call.arguments,
                    "result": None,
                    "idempotency_key": key,
                    "step": step,
                    "call_id": calls[-1].id,
                    "status": "pending",
                }
            )
        state["messages"].append(ChatMessage("assistant", response.content, calls).to_dict())
        emit_progress(
            stage,
            f"model call {state['iterations']}",
            step=state["step"] - len(calls),
            tool_calls=[c.name for c in calls],
        )
        if calls:
            return TaskResult.running(context=context, state=_checkpoint(state))
        outputs = _outputs(stage, state, output_key, response.content)
        return TaskResult.success(outputs=outputs, context=context, state=_checkpoint(state))

    def _run_tool(self, stage: StageExecution, state: dict[str, Any]) -> None:
        """Make the first pending tool call and record its result in ``state``."""
        pending = state["pending"][0]
        record = next(i for i in state["invocations"] if i["step"] == pending["step"])
        call = ToolCall(record["tool"], record["arguments"], record["call_id"])
        # A TransientError escapes here, before anything is recorded: the engine retries
        # this same call, with the same idempotency key. A bug (PermanentError) escapes
        # the same way and fails the stage.
        result = self.tools.dispatch(call, pending["idempotency_key"], errors=self.tool_errors)
        state["pending"] = state["pending"][1:]
        record["result"] = result.content
        record["status"] = "error" if result.is_error else "done"
        state["messages"].append(
            ChatMessage("tool", result.content, tool_call_id=call.id, name=call.name).to_dict()
        )
        emit_progress(
            stage, f"tool {call.name}", step=record["step"], tool=call.name, error=result.is_error
        )


def _fresh(reader: ContextReader, committed: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint a run starts from.

    A jump or a restart runs the stage again, and the reset leaves only the ``kept``
    entry of the task's state: the new run starts a new conversation whose step numbers
    go on from the last run's, so that its tool calls get idempotency keys of their own.
    """
    kept = committed.get(KEPT_STATE_KEY) or {}
    return {
        "messages": [m.to_dict() for m in initial_messages(reader)],
        "step": int(kept.get("step", 0)),
        "iterations": 0,
        "pending": [],
        "invocations": [],
        "usage": Usage().to_dict(),
    }


_ATOMIC = frozenset({str, int, float, bool, type(None)})


def _private_copy(value: Any) -> Any:
    """A deep copy of a checkpoint that shares only immutable values with it.

    The checkpoint is JSON data (it came from the database): new dicts and lists, the
    same strings and numbers. ``copy.deepcopy`` does the same with a memo and a dispatch
    per value, 3 to 4 times slower for a conversation, which grows with every step.
    Anything else (only on a stage built by hand) goes to ``deepcopy``.
    """
    kind = type(value)
    if kind is dict:
        return {key: _private_copy(item) for key, item in value.items()}
    if kind is list:
        return [_private_copy(item) for item in value]
    return value if kind in _ATOMIC else copy.deepcopy(value)


def _checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """The task's state to commit: the checkpoint, and the step count a reset keeps."""
    return {**state, KEPT_STATE_KEY: {"step": state["step"]}}


def _last_text(state: dict[str, Any]) -> str | None:
    for message in reversed(state["messages"]):
        if message.get("role") == "assistant" and message.get("content"):
            return str(message["content"])
    return None


def _outputs(
    stage: StageExecution, state: dict[str, Any], output_key: str, answer: str | None
) -> dict[str, Any]:
    usage = Usage.from_dict(state["usage"])
    return {
        output_key: answer,
        "tool_invocations": state["invocations"],
        "iterations": state["iterations"],
        "usage": usage.to_dict(),
        **usage_outputs(stage, usage),
        **raised_budget_outputs(stage),
    }
