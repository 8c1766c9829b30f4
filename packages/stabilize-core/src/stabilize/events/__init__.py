"""Event recording and the live bus.

Recording is on by default: each transition's events are appended to the log in the
transaction of the transition, in the engine's own database.
"""

from __future__ import annotations

from stabilize.events.bus import EventBus, get_event_bus
from stabilize.events.model import TERMINAL_EVENTS, Event, EventType
from stabilize.events.postgres import PostgresEventStore
from stabilize.events.recorder import (
    EventRecorder,
    EventStore,
    SqliteEventStore,
    configure_event_sourcing,
    current_event_store,
    default_event_store,
    disable_event_sourcing,
    emit_progress,
    open_event_store,
    recording_enabled,
)
from stabilize.events.replay import EventReplayer, ReplayError

__all__ = [
    "TERMINAL_EVENTS",
    "Event",
    "EventBus",
    "EventRecorder",
    "EventReplayer",
    "EventStore",
    "EventType",
    "PostgresEventStore",
    "ReplayError",
    "SqliteEventStore",
    "configure_event_sourcing",
    "current_event_store",
    "default_event_store",
    "disable_event_sourcing",
    "emit_progress",
    "get_event_bus",
    "open_event_store",
    "recording_enabled",
]
