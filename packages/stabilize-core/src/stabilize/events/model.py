"""The event record and the names of event types."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """The kinds of events transitions record (names follow the original package)."""

    WORKFLOW_CREATED = "workflow.created"
    WORKFLOW_STARTED = "workflow.started"
    WORKFLOW_COMPLETED = "workflow.completed"
    WORKFLOW_FAILED = "workflow.failed"
    WORKFLOW_CANCELED = "workflow.canceled"
    WORKFLOW_PAUSED = "workflow.paused"
    WORKFLOW_RESUMED = "workflow.resumed"
    STAGE_STARTED = "stage.started"
    STAGE_COMPLETED = "stage.completed"
    STAGE_FAILED = "stage.failed"
    STAGE_SKIPPED = "stage.skipped"
    STAGE_CANCELED = "stage.canceled"
    STAGE_SUSPENDED = "stage.suspended"
    STAGE_RESUMED = "stage.resumed"
    TASK_STARTED = "task.started"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_RETRIED = "task.retried"
    TASK_SUSPENDED = "task.suspended"
    TASK_PAUSED = "task.paused"
    CONTEXT_UPDATED = "context.updated"
    JUMP_EXECUTED = "jump.executed"
    JOIN_FIRED = "join.fired"
    OUTPUTS_UPDATED = "outputs.updated"
    CUSTOM_PROGRESS = "custom.progress"
    STATE_CHANGED = "state.changed"


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
