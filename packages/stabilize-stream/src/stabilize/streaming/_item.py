"""The items a workflow stream yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from stabilize.models.event import TERMINAL_EVENTS, Event

__all__ = ["TERMINAL_EVENTS", "StreamItem"]  # TERMINAL_EVENTS: core's, re-exported here


@dataclass(frozen=True)
class StreamItem:
    """One event of a workflow, as a stream delivers it.

    Attributes:
        event_type: One of :class:`stabilize.events.EventType` (as a string).
        entity_type: ``workflow``, ``stage`` or ``task``.
        entity_id: The id of that entity.
        workflow_id: The workflow it belongs to.
        data: What changed.
        sequence: Its number in the workflow's log (1, 2, 3, ...); 0 for a live progress
            update that is not recorded yet.
        timestamp: Commit (or, for live progress, emission) time in epoch milliseconds.
        source: ``"replay"`` for recorded history (in the log when the consumer started
            reading, and every item of :meth:`WorkflowStream.replay`), ``"live"`` for what
            happened since: events committed later and in-process progress updates (the
            values of the original package).
    """

    event_type: str
    entity_type: str
    entity_id: str
    workflow_id: str
    data: dict[str, Any] = field(default_factory=dict)
    sequence: int = 0
    timestamp: int = 0
    source: Literal["live", "replay"] = "replay"

    @property
    def is_terminal(self) -> bool:
        """True for ``workflow.completed``, ``workflow.failed`` and ``workflow.canceled``."""
        return self.event_type in TERMINAL_EVENTS

    @classmethod
    def from_event(cls, event: Event, source: Literal["live", "replay"] = "replay") -> StreamItem:
        """The item of a recorded (or live) event.

        Args:
            event: The event, as the log or the event bus gives it.
            source: ``replay`` for an event read from the log, ``live`` for one
                delivered as it happened.

        Returns:
            The item, with the event's fields.
        """
        return cls(
            event_type=event.event_type,
            entity_type=event.entity_type,
            entity_id=event.entity_id,
            workflow_id=event.workflow_id,
            data=event.data,
            sequence=event.sequence,
            timestamp=event.timestamp,
            source=source,
        )
