"""The event record and the names of event types."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """Every kind of event the engine records: the one list of them.

    Names follow the original package. Each member's docstring gives the event's
    ``entity_type`` and the keys of its ``data`` (its payload). Every event a transition
    records is first in the log as a ``state.changed`` of the same commit, which carries the
    stored diff; the payloads below say what happened in words a reader can use.
    """

    WORKFLOW_CREATED = "workflow.created"
    """Workflow. The whole definition as stored (``workflow`` row and ``stages`` rows): the
    first event of every log, what a replay starts from."""
    WORKFLOW_STARTED = "workflow.started"
    """Workflow. No payload."""
    WORKFLOW_COMPLETED = "workflow.completed"
    """Workflow, terminal. ``status`` (``SUCCEEDED``)."""
    WORKFLOW_FAILED = "workflow.failed"
    """Workflow, terminal. ``status`` (``TERMINAL``), ``error`` (text or None)."""
    WORKFLOW_CANCELED = "workflow.canceled"
    """Workflow, terminal. ``status`` (``CANCELED``), ``error`` (the reason, or None)."""
    WORKFLOW_PAUSED = "workflow.paused"
    """Workflow. No payload."""
    WORKFLOW_RESUMED = "workflow.resumed"
    """Workflow. No payload."""
    WORKFLOW_RESTARTED = "workflow.restarted"
    """Workflow: a finished workflow runs again from a restarted stage. ``previous`` (the
    status it had), ``user``."""
    STAGE_STARTED = "stage.started"
    """Stage. ``ref_id``."""
    STAGE_COMPLETED = "stage.completed"
    """Stage. ``status`` (``SUCCEEDED``), ``error`` (None)."""
    STAGE_FAILED = "stage.failed"
    """Stage. ``status`` (``TERMINAL``, ``STOPPED`` or ``FAILED_CONTINUE``), ``error``."""
    STAGE_SKIPPED = "stage.skipped"
    """Stage. ``status`` (``SKIPPED``); ``reason`` when one is known (``withdrawn``: a rival
    was chosen or a join no longer needs it; a split condition's text)."""
    STAGE_CANCELED = "stage.canceled"
    """Stage. ``status`` (``CANCELED``); a stage canceled on its own also has ``reason``,
    ``user`` and ``note``."""
    STAGE_SUSPENDED = "stage.suspended"
    """Stage: its task waits for a signal. ``timeout_seconds`` (None: no timeout)."""
    STAGE_RESUMED = "stage.resumed"
    """Stage: a signal woke it. ``signal`` (name), ``data``, ``user``."""
    STAGE_RESTARTED = "stage.restarted"
    """Stage: it and what is downstream of it run again. ``ref_id``, ``user``."""
    STAGE_BUFFERED = "stage.buffered"
    """Stage: ready, but held. ``mutex_key`` (another stage holds the mutex) or
    ``deferred_choice_group`` (another member of the group runs)."""
    STAGE_DEADLINE = "stage.deadline"
    """Stage: its ``deadline_seconds`` passed. ``route`` (the ref_id it escalates to, or
    None: the stage fails)."""
    STAGE_EXPANDED = "stage.expanded"
    """Stage: a multi-instance stage created its instances. ``instances`` (how many)."""
    TASK_STARTED = "task.started"
    """Task. ``stage_id``, ``name``."""
    TASK_COMPLETED = "task.completed"
    """Task. ``stage_id``, ``status``, ``context`` and ``outputs`` (what the result
    added), ``error``."""
    TASK_FAILED = "task.failed"
    """Task. ``stage_id``, ``status``, ``error``; when it came from a result, also
    ``context`` and ``outputs``."""
    TASK_RETRIED = "task.retried"
    """Task: a transient error; it runs again. ``stage_id``, ``attempt``, ``error``,
    ``delay_ms``, ``context``."""
    TASK_SUSPENDED = "task.suspended"
    """Task: it waits for a signal. As ``task.completed``."""
    TASK_PAUSED = "task.paused"
    """Task: its result arrived while the workflow was paused. ``stage_id``."""
    CONTEXT_UPDATED = "context.updated"
    """Stage: a running task updated the context. ``context`` (the keys it set)."""
    JUMP_EXECUTED = "jump.executed"
    """Stage: a task jumped. ``source`` and ``target`` (ref_ids), ``jump_count`` (the
    workflow's), ``context`` (what the jump passed)."""
    JOIN_FIRED = "join.fired"
    """Stage: a k-of-n or first-wins join started it. ``succeeded``, ``needed``."""
    OUTPUTS_UPDATED = "outputs.updated"
    """Stage: a straggler finished after a join fired. ``outputs`` (merged late),
    ``late_from`` (its ref_id)."""
    CHOICE_MADE = "choice.made"
    """Stage: a signal chose it in a deferred choice. ``group``, ``chosen`` (ref_id)."""
    SIGNAL_QUEUED = "signal.queued"
    """Stage: a signal arrived before the stage waited for it; it is kept. ``name``,
    ``data``, ``user``."""
    CUSTOM_PROGRESS = "custom.progress"
    """Stage: a task reported progress (``emit_progress``). ``message``, ``stage_id``,
    ``ref_id`` and the task's own keys."""
    STATE_CHANGED = "state.changed"
    """Workflow: the stored rows a transition changed (``workflow`` and ``stages`` diffs),
    first among the events of its commit; replay applies them."""


TERMINAL_EVENTS: frozenset[str] = frozenset(
    {EventType.WORKFLOW_COMPLETED, EventType.WORKFLOW_FAILED, EventType.WORKFLOW_CANCELED}
)
"""The event types that end a workflow's log (until a restart)."""


@dataclass(frozen=True)
class Event:
    """One committed event of a workflow.

    Attributes:
        workflow_id: The workflow it belongs to.
        sequence: Its number in the workflow's log: 1, 2, 3, ... with no gap.
        event_type: One of :class:`EventType` (as a string).
        entity_type: ``workflow``, ``stage`` or ``task``.
        entity_id: The id of that entity.
        timestamp: Commit time in epoch milliseconds.
        data: What changed (deltas, never whole copies of a context).
    """

    workflow_id: str
    sequence: int
    event_type: str
    entity_type: str
    entity_id: str
    timestamp: int
    data: dict[str, Any] = field(default_factory=dict)
