"""Whether and where transitions record their events: the process-wide setting.

Recording is on by default, into each engine's own database. The backends read this
setting in every write transaction (:func:`event_table_for`) and hand what they
committed to in-process listeners (:func:`publish_committed`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stabilize.events.bus import get_event_bus
from stabilize.models.event import Event

if TYPE_CHECKING:
    from stabilize.backends._base import Backend, EventStore
    from stabilize.records import EventDraft


@dataclass
class EventRecorder:
    """The active event-recording configuration (see :func:`configure_event_sourcing`).

    Attributes:
        event_store: Where events go; None: the ``events`` table of each engine's own
            database (the default).
        publish_to_bus: Deliver committed events to in-process listeners too.
    """

    event_store: EventStore | None = None
    publish_to_bus: bool = True


_lock = threading.Lock()
_recorder: EventRecorder | None = EventRecorder()
"""Recording is on by default, into the engine's own database."""


def configure_event_sourcing(
    event_store: EventStore | None = None, publish_to_bus: bool = True, bus_max_workers: int = 4
) -> EventRecorder:
    """Record every workflow, stage and task transition from now on.

    Recording is on by default, into the engine's own database: call this only to keep
    the log somewhere else (a SQLite file of its own, another PostgreSQL schema of the
    same database), or with no store to go back to the default after
    :func:`disable_event_sourcing`. Each transition's events are appended in the same
    transaction as the transition, with per-workflow sequence numbers.

    Args:
        event_store: Where to record (None: each engine's own database).
        publish_to_bus: Also deliver committed events to in-process listeners.
        bus_max_workers: Accepted for compatibility; delivery is synchronous.
    """
    global _recorder
    with _lock:
        _recorder = EventRecorder(event_store, publish_to_bus)
        return _recorder


def disable_event_sourcing() -> None:
    """Stop recording events (live listeners in this process still get them).

    Transitions then write no log rows; streams of workflows run meanwhile have a gap
    that cannot be replayed. :func:`configure_event_sourcing` turns recording back on.
    """
    global _recorder
    with _lock:
        _recorder = None


def recording_enabled() -> bool:
    """True unless :func:`disable_event_sourcing` turned recording off."""
    return _recorder is not None


def publishing_enabled() -> bool:
    """True when committed events go to in-process listeners (the default)."""
    recorder = _recorder
    return recorder is None or recorder.publish_to_bus


def current_event_store() -> EventStore | None:
    """The event store given to :func:`configure_event_sourcing`, if any.

    None both when recording is off and when it goes to each engine's own database (the
    default); ``default_event_store`` finds the store of a workflow in both cases.
    """
    recorder = _recorder
    return recorder.event_store if recorder is not None else None


def event_table_for(backend: Backend) -> str | None:
    """Where ``backend``'s transactions append events (a table prefix), or None: not at all."""
    recorder = _recorder
    if recorder is None:
        return None
    if recorder.event_store is None:
        return ""
    return recorder.event_store.event_table_for(backend)


def publish_committed(recorded: list[tuple[str, int, EventDraft, int]]) -> None:
    """Deliver events a backend just committed to in-process listeners.

    Args:
        recorded: ``(workflow id, sequence, event, timestamp)`` of each committed event.
    """
    bus = get_event_bus()
    if not bus.has_listeners or not publishing_enabled():
        return
    for workflow_id, sequence, draft, timestamp in recorded:
        if draft.event_type == "custom.progress":
            continue  # emit_progress delivered it live already
        bus.publish(
            Event(
                workflow_id,
                sequence,
                draft.event_type,
                draft.entity_type,
                draft.entity_id,
                timestamp,
                draft.data,
            )
        )
