"""How long a model call is retried when the provider keeps failing (issue 14).

A provider answering 5xx (or timing out, or refusing connections) again and again used to
leave the stage retrying under the engine's general backoff for minutes. A model call now
has a time budget: retries back off from half a second, and once the next wait would pass
the budget the stage fails with the provider's status and message. Rate limits (429) are
not failures of the provider and keep the engine's usual retries.
"""

from __future__ import annotations

import time
from typing import Any

from stabilize.errors import TransientError
from stabilize.llm._types import LLMError
from stabilize.models.stage import StageExecution
from stabilize.tasks import ContextReader

DEFAULT_RETRY_TIMEOUT = 30.0
"""Seconds a failing model call is retried before the stage fails."""

RETRY_TIMEOUT_KEY = "llm_retry_timeout_seconds"
"""The stage-context key that overrides the task's budget for one stage."""

RETRY_STATE_KEY = "llm_retry"
"""Where the retries of the current call are counted, in the task's state."""

FIRST_DELAY = 0.5
MAX_DELAY = 8.0


def retry_budget(stage: StageExecution, default: float) -> float:
    """The budget of a call in ``stage``: the context key, else the task's ``default``."""
    reader = ContextReader(stage.context, "LLM retry")
    budget = reader.number(RETRY_TIMEOUT_KEY, None, minimum=0)
    return float(budget) if budget is not None else default


def retry_or_give_up(
    stage: StageExecution, error: TransientError, call: str, budget: float
) -> Exception:
    """What to raise for a failed call: a retry in a moment, or an LLMError once over budget.

    Args:
        stage: The stage making the call; its task's state keeps the count across retries.
        error: What the client raised.
        call: Names the call within the stage's run, so that a later call starts afresh.
        budget: Seconds the call may keep failing.
    """
    if error.code == 429:
        return error
    key = f"{stage.start_time}:{call}"
    record: Any = stage.task_state.get(RETRY_STATE_KEY)
    same = isinstance(record, dict) and record.get("key") == key
    now = time.time()
    since = float(record["since"]) if same else now
    attempts = int(record["attempts"]) + 1 if same else 1
    delay = min(FIRST_DELAY * 2 ** (attempts - 1), MAX_DELAY)
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    elapsed = now - since
    if elapsed + delay > budget:
        status = error.code if isinstance(error.code, int) else None
        return LLMError(
            f"{error} (gave up after {attempts} attempt{'s' if attempts > 1 else ''} "
            f"in {elapsed:.1f}s; the retry budget is {budget:g}s)",
            status_code=status,
        )
    counted = {"key": key, "since": since, "attempts": attempts}
    return TransientError(
        str(error),
        code=error.code,
        error_code=error.error_code,
        retry_after=delay,
        # The rest of the state (an agent's last checkpoint) stays as it was committed.
        state={**stage.task_state, RETRY_STATE_KEY: counted},
    )
