"""Sending decisions and signals to waiting stages."""

from __future__ import annotations

from typing import Any

from stabilize.errors import SignalError
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus as S
from stabilize.orchestrator import send_stage_signal
from stabilize.persistence.store import WorkflowStore
from stabilize.queue.queue import Queue

APPROVE = "approve"
REJECT = "reject"


def approve(
    queue: Queue,
    execution_id: str,
    stage_id: str,
    data: dict[str, Any] | None = None,
    *,
    user: str | None = None,
    note: str | None = None,
    execution_type: str = "PIPELINE",
    store: WorkflowStore | None = None,
) -> None:
    """Approve an approval gate; its workflow carries on.

    A gate that has not suspended yet (it has not started, or its upstream still runs)
    keeps the decision and acts on it when it suspends.

    Args:
        queue: The queue of the gate's database.
        execution_id: The workflow id.
        stage_id: The gate's stage id (or ``ref_id``).
        data: Anything to pass along; the gate outputs it as ``approval``.
        user: Who approves (default: ``data["user"]``); recorded in the event log.
        note: A note recorded with the decision.
        execution_type: Accepted for compatibility.
        store: Accepted for compatibility (the queue's database is used).

    Raises:
        SignalError: the workflow has no such stage, or the gate takes no decision (it
            has one already, or it finished). Nothing is changed then.
        WorkflowNotFoundError: no workflow has this id.
    """
    _decide(queue, execution_id, stage_id, APPROVE, data, user, note)


def reject(
    queue: Queue,
    execution_id: str,
    stage_id: str,
    data: dict[str, Any] | None = None,
    *,
    user: str | None = None,
    note: str | None = None,
    execution_type: str = "PIPELINE",
    store: WorkflowStore | None = None,
) -> None:
    """Reject an approval gate: it fails (or continues, if the gate says so).

    A gate that has not suspended yet keeps the decision and acts on it when it
    suspends, as with :func:`approve`.

    Args:
        queue: The queue of the gate's database.
        execution_id: The workflow id.
        stage_id: The gate's stage id (or ``ref_id``).
        data: Anything to pass along (a ``reason``, say); the gate outputs it as
            ``approval``.
        user: Who rejects (default: ``data["user"]``); recorded in the event log.
        note: A note recorded with the decision.
        execution_type: Accepted for compatibility.
        store: Accepted for compatibility (the queue's database is used).

    Raises:
        SignalError: the workflow has no such stage, or the gate takes no decision (it
            has one already, or it finished). Nothing is changed then.
        WorkflowNotFoundError: no workflow has this id.
    """
    _decide(queue, execution_id, stage_id, REJECT, data, user, note)


def send_signal(
    queue: Queue,
    execution_id: str,
    stage_id: str,
    signal_name: str,
    signal_data: dict[str, Any] | None = None,
    *,
    persistent: bool = True,
    user: str | None = None,
    execution_type: str = "PIPELINE",
    store: WorkflowStore | None = None,
) -> None:
    """Send a named signal to a stage.

    A suspended stage resumes at once. With ``persistent`` (the default), a signal sent
    before the stage suspends is kept and delivered when it does.

    Args:
        queue: The queue of the stage's database.
        execution_id: The workflow id.
        stage_id: The stage id (or ``ref_id``).
        signal_name: The signal's name (what :func:`get_signal` returns first).
        signal_data: JSON values delivered with it.
        persistent: Keep a signal sent before the stage suspends, for when it does.
        user: Who sent it; recorded in the event log.
        execution_type: Accepted for compatibility.
        store: Accepted for compatibility (the queue's database is used).

    Raises:
        SignalError: no such stage, the stage finished, or it is not waiting yet and
            ``persistent`` is False (the signal would not be kept for later). Nothing is
            changed then.
        WorkflowNotFoundError: no workflow has this id.
    """
    send_stage_signal(
        queue, execution_id, stage_id, signal_name, signal_data, persistent=persistent, user=user
    )


def get_signal(stage: StageExecution) -> tuple[str | None, dict[str, Any]]:
    """The signal that resumed the task holding ``stage``: ``(name, data)``, or ``(None, {})``.

    Args:
        stage: The stage the task received.

    Returns:
        The signal's name and a copy of its data, or ``(None, {})`` when no signal was
        delivered to this run of the stage.
    """
    name = stage.context.get("_signal_name")
    data = stage.context.get("_signal_data") or {}
    return (name if isinstance(name, str) else None), dict(data)


def _decide(
    queue: Queue,
    execution_id: str,
    stage_id: str,
    decision: str,
    data: dict[str, Any] | None,
    user: str | None,
    note: str | None,
) -> None:
    payload = dict(data or {})
    if note is not None:
        payload["note"] = note
    who = user if user is not None else payload.get("user")
    by = str(who) if who is not None else None
    # Kept until the gate suspends when it comes early (issue 14): a quick approver must
    # not lose the decision because the upstream stage still runs.
    send_stage_signal(
        queue, execution_id, stage_id, decision, payload, persistent=True, user=by, guard=_undecided
    )


def _undecided(stage: StageExecution) -> None:
    """Refuse a second decision: it would be dropped silently once the gate ends."""
    earlier = _decision_of(stage)
    if earlier is not None:
        raise SignalError(
            f"stage {stage.ref_id!r} of workflow {stage.workflow_id} is not waiting for a "
            f"decision: it has one already ({earlier})"
        )


def _decision_of(stage: StageExecution) -> str | None:
    """The decision ``stage`` was given and has not finished acting on, if any."""
    for signal in stage.pending_signals:
        if signal.get("name") in (APPROVE, REJECT):
            return str(signal["name"])
    name = stage.context.get("_signal_name")
    if stage.status is S.RUNNING and name in (APPROVE, REJECT):
        return str(name)
    return None
