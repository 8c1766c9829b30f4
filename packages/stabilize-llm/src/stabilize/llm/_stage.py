"""What LLMTask and AgentLoopTask share: reading the stage, usage ledgers and token budgets.

Usage accounting. Each LLM or agent stage outputs ``llm_usage`` (its own tokens) and a
ledger entry under a key of its own, ``_llm_spent.<ref_id>``. Because every stage's key is
distinct, a downstream stage sees the entries of all its ancestors in its context, and
their sum is what the workflow has spent before it (``llm_workflow_usage`` adds the
stage's own share). Stages on parallel branches cannot see each other's spending until
they join.

Budgets. ``llm_token_budget`` (in the workflow context or the stage's) limits the tokens a
workflow may spend. Before each model call the stage compares what was spent, plus an
estimate of the call's prompt, with the limit; if the call would exceed it the stage
SUSPENDS for a human decision instead of failing. The signal ``raise_budget`` with data
``{"tokens": N}`` raises the limit by N (``{"limit": M}`` sets it) and the stage carries on;
``stop`` ends it TERMINAL. A raised limit is written to the stage's outputs, so later
stages inherit it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from stabilize.llm._client import LLMClient, default_base_url
from stabilize.llm._types import ChatMessage, Usage
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.tasks import ContextReader
from stabilize.tasks.result import TaskResult

SPENT_PREFIX = "_llm_spent."
BUDGET_KEY = "llm_token_budget"
WAITING_KEY = "llm_budget_exceeded"
RAISE_SIGNAL = "raise_budget"
STOP_SIGNAL = "stop"
# Clears the signal a decision consumed (its sender, stage.signal_user, is replaced by the
# next signal's).
_CLEAR_SIGNAL = {"_signal_name": None, "_signal_data": None}


def client_for(reader: ContextReader, injected: LLMClient | None) -> LLMClient:
    """The injected client, or one built from ``model``, ``base_url`` and ``api``.

    An API key is never read from the stage context (it would be stored with the
    workflow): the client takes it from the environment, and sends it only to the
    environment's own endpoint (``OPENAI_BASE_URL`` or the default, ``OLLAMA_HOST``). A
    ``base_url`` that names another server gets no key: whoever writes a workflow must not
    be able to send the worker's key to a server of their choosing. For another endpoint
    that needs a key, the worker's operator injects a client.
    """
    if reader.has("api_key"):
        raise reader.error(
            "api_key",
            "is not accepted: keys must not be stored with the workflow; set OPENAI_API_KEY "
            "or OLLAMA_API_KEY in the worker's environment, or inject an LLMClient",
        )
    if injected is not None:
        return injected
    model = reader.text("model")
    api = reader.choice("api", ("openai", "ollama"), "openai")
    base_url = reader.text("base_url", None)
    if base_url is not None and base_url.rstrip("/") != default_base_url(api).rstrip("/"):
        return LLMClient(model, base_url=base_url, api=api, api_key="")
    return LLMClient(model, base_url=base_url, api=api)


def call_options(reader: ContextReader, injected: LLMClient | None) -> dict[str, Any]:
    """Keyword arguments for ``chat``/``stream``: temperature, model override, options."""
    options: dict[str, Any] = dict(reader.raw("options", {}))
    if not isinstance(reader.raw("options", {}), Mapping):
        raise reader.error("options", "must be a mapping of model options")
    temperature = reader.number("temperature", None, minimum=0)
    if temperature is not None:
        options["temperature"] = float(temperature)
    if injected is not None and reader.has("model"):
        options["model"] = reader.text("model")
    return options


def initial_messages(reader: ContextReader) -> list[ChatMessage]:
    """The conversation to start from: ``messages``, or ``prompt``; ``system`` first."""
    if reader.has("messages"):
        raw = reader.raw("messages")
        if not isinstance(raw, list) or not all(isinstance(m, Mapping) for m in raw):
            raise reader.error("messages", "must be a list of {role, content} objects")
        messages = [ChatMessage.from_dict(m) for m in raw]
    else:
        if not reader.has("prompt"):
            raise reader.error("prompt", "is required (or give 'messages')")
        messages = [ChatMessage("user", reader.text("prompt"))]
    system = reader.text("system", None)
    if system and not (messages and messages[0].role == "system"):
        messages.insert(0, ChatMessage("system", system))
    return messages


def estimate_tokens(messages: list[ChatMessage], tools: list[dict[str, Any]] | None) -> int:
    """A rough count of a request's prompt tokens (four characters a token)."""
    chars = sum(len(m.content) for m in messages)
    chars += sum(len(json.dumps(c.to_dict())) for m in messages for c in m.tool_calls)
    if tools:
        chars += len(json.dumps(tools))
    return math.ceil(chars / 4)


def upstream_usage(stage: StageExecution) -> Usage:
    """What the stages before this one spent (the ledger entries of its ancestors)."""
    own = SPENT_PREFIX + stage.ref_id
    total = Usage()
    for key, value in stage.context.items():
        if key.startswith(SPENT_PREFIX) and key != own:
            total = total + Usage.from_dict(value)
    return total


def usage_outputs(stage: StageExecution, own: Usage) -> dict[str, Any]:
    """The usage outputs of a stage: its own, its ledger entry and the workflow's so far."""
    return {
        "llm_usage": own.to_dict(),
        SPENT_PREFIX + stage.ref_id: own.to_dict(),
        "llm_workflow_usage": (upstream_usage(stage) + own).to_dict(),
    }


def check_budget(
    stage: StageExecution, reader: ContextReader, own: Usage, next_call: int
) -> TaskResult | None:
    """None when the next call fits the budget, else the result that suspends the stage."""
    limit = reader.number(BUDGET_KEY, None, minimum=0, integer=True)
    if limit is None:
        return None
    spent = upstream_usage(stage).total_tokens + own.total_tokens
    if spent + next_call <= limit:
        return None
    waiting = {
        "limit": limit,
        "spent": spent,
        "estimated_next_call": next_call,
        "reason": (
            f"the next model call (about {next_call} tokens) would take the workflow past its "
            f"token budget of {limit} (spent {spent}); send 'raise_budget' with "
            "{'tokens': N} to continue, or 'stop'"
        ),
    }
    context: dict[str, Any] = {WAITING_KEY: waiting, **_CLEAR_SIGNAL}
    wait = reader.number("llm_budget_timeout_seconds", None, minimum=0)
    return TaskResult.suspend(context=context, signal_timeout=wait)


def take_budget_decision(
    stage: StageExecution, reader: ContextReader, outputs: Mapping[str, Any]
) -> tuple[TaskResult | None, dict[str, Any]]:
    """Act on the signal that resumed a stage waiting for a budget decision.

    Returns ``(result, context)``: a result that ends or re-suspends the stage, or None
    and the context changes (the raised limit) to apply before carrying on.
    """
    waiting = stage.context.get(WAITING_KEY)
    name = stage.context.get("_signal_name")
    if not isinstance(waiting, Mapping) or name is None:
        return None, {}
    data = stage.context.get("_signal_data") or {}
    user = stage.signal_user
    limit = int(waiting.get("limit") or 0)
    if name == RAISE_SIGNAL:
        new_limit = _raised(limit, data)
        if new_limit is None:
            problem = f"'raise_budget' needs data {{'tokens': N}} with N > 0, got {data!r}"
            context = {WAITING_KEY: {**waiting, "error": problem}, **_CLEAR_SIGNAL}
            return TaskResult.suspend(context=context), {}
        raises = list(stage.context.get("llm_budget_raises") or [])
        raises.append({"from": limit, "to": new_limit, "by": user})
        stage.context.update({BUDGET_KEY: new_limit, "llm_budget_raises": raises})
        return None, {
            BUDGET_KEY: new_limit,
            WAITING_KEY: None,
            "llm_budget_raises": raises,
            **_CLEAR_SIGNAL,
        }
    if name in (STOP_SIGNAL, "timeout"):
        why = (
            "no budget decision came in time"
            if name == "timeout"
            else f"stopped by {user or 'someone'}"
        )
        error = (
            f"stage {stage.ref_id!r} {why}: the token budget of {limit} tokens would be "
            f"exceeded (spent {waiting.get('spent')})"
        )
        return TaskResult(
            WorkflowStatus.TERMINAL,
            {WAITING_KEY: None, **_CLEAR_SIGNAL},
            dict(outputs),
            error=error,
        ), {}
    # Any other signal is not a budget decision: keep waiting.
    return TaskResult.suspend(context=dict(_CLEAR_SIGNAL)), {}


def _raised(limit: int, data: Any) -> int | None:
    if not isinstance(data, Mapping):
        return None
    tokens, new = data.get("tokens"), data.get("limit")
    if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0:
        return limit + tokens
    if isinstance(new, int) and not isinstance(new, bool) and new > limit:
        return new
    return None


def raised_budget_outputs(stage: StageExecution) -> dict[str, Any]:
    """Pass a raised budget on to later stages (it is in the stage's own context)."""
    if stage.context.get("llm_budget_raises"):
        return {BUDGET_KEY: stage.context.get(BUDGET_KEY)}
    return {}
