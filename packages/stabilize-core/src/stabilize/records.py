"""What storage reads and writes besides workflows and stages.

Queue messages (as enqueued and as claimed), the events a transition yields and the
effects of a transition, which :meth:`stabilize.backends._base.Transaction.save` commits.
The engine produces them and the backends store them; neither depends on the other for
these types. The kinds of messages are in :mod:`stabilize.message_kinds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stabilize._json import dumps, dumps_known

if TYPE_CHECKING:
    from stabilize.models.event import EventType
    from stabilize.models.stage import StageExecution


@dataclass(frozen=True)
class Message:
    """A message to enqueue: ``delay_ms`` postpones its delivery."""

    kind: str
    workflow_id: str
    stage_id: str | None = None
    task_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    delay_ms: int = 0


@dataclass(frozen=True)
class ClaimedMessage:
    """A message taken from the queue, with the lease that fences its acknowledgement."""

    id: int
    kind: str
    workflow_id: str
    stage_id: str | None
    task_id: str | None
    payload: dict[str, Any]
    attempts: int
    lease_token: int


USER_DATA_EVENTS = frozenset({"custom.progress"})
"""Event types whose data comes from a task as it is (see :meth:`EventDraft.json`)."""


@dataclass(frozen=True)
class EventDraft:
    """An event a transition yields; the backend numbers it when it records it."""

    event_type: str
    entity_type: str
    entity_id: str
    data: dict[str, Any] = field(default_factory=dict)
    encoded: str | None = None
    """``data`` already encoded as JSON, when the backend has that text at hand."""

    def json(self) -> str:
        """``data`` as compact JSON.

        The engine's own events hold values of the rows the same transition wrote
        (already checked to be JSON) and take the faster encoder; the data of
        :data:`USER_DATA_EVENTS` is checked here.
        """
        if self.encoded is not None:
            return self.encoded
        if self.event_type in USER_DATA_EVENTS:
            return dumps(self.data)
        return dumps_known(self.data)


@dataclass
class Effects:
    """What a transition changed and what it wants done, for the processor to commit.

    Attributes:
        stages: Stages whose rows must be written, by id.
        workflow_changed: Whether the workflow row must be written.
        messages: Messages to enqueue in the same transaction.
        events: Events to record in the same transaction.
        drop_messages: Delete every other queued message of the workflow (it ended).
        stale: The consumed message no longer applied; only its ack is committed.
        new_stages: Stages added at run time (dynamic fan-out instances), to insert.
        drop_timers: ``(kind, stage_id)`` of delayed messages that no longer matter (a
            deadline of a finished stage, the timeout of a signal that came).
        released_mutexes: ``(key, stage_id)`` of mutexes given up by stages that left an
            active status, turned into ReleaseMutex messages when the transition ends.
        completed_at: When the set of active stages last became empty in this transition
            (the workflow may be complete then).
    """

    stages: dict[str, StageExecution] = field(default_factory=dict)
    workflow_changed: bool = False
    messages: list[Message] = field(default_factory=list)
    events: list[EventDraft] = field(default_factory=list)
    drop_messages: bool = False
    stale: bool = False
    new_stages: list[StageExecution] = field(default_factory=list)
    drop_timers: list[tuple[str, str]] = field(default_factory=list)
    released_mutexes: list[tuple[str, str]] = field(default_factory=list)
    completed_at: int | None = None

    def touch(self, stage: StageExecution) -> None:
        """Mark ``stage`` as changed."""
        self.stages[stage.id] = stage

    def emit(self, event_type: EventType, entity_type: str, entity_id: str, **data: Any) -> None:
        """Add an event of a declared type (:class:`~stabilize.models.event.EventType`)."""
        self.events.append(EventDraft(event_type.value, entity_type, entity_id, data))
