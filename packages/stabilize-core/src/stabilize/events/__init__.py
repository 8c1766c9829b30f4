"""Event recording and the live bus.

Recording is on by default: each transition's events are appended to the log in the
transaction of the transition, in the engine's own database.

The names that come from the storage layer (the :class:`EventStore` interface, the
dialects' event stores, opening a log by URL) are loaded on first use: the backends use
the modules of this package, so importing it must not import them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stabilize.events.bus import EventBus, get_event_bus
from stabilize.events.follow import can_follow, follow_commits
from stabilize.events.progress import emit_progress
from stabilize.events.recording import (
    EventRecorder,
    configure_event_sourcing,
    current_event_store,
    disable_event_sourcing,
    recording_enabled,
)
from stabilize.events.replay import EventReplayer, ReplayError
from stabilize.models.event import TERMINAL_EVENTS, Event, EventType

if TYPE_CHECKING:
    from stabilize.backends._base import CommitWatcher as CommitWatcher
    from stabilize.backends._base import EventStore as EventStore
    from stabilize.backends.postgres import PostgresEventStore as PostgresEventStore
    from stabilize.backends.sqlite import SqliteEventStore as SqliteEventStore
    from stabilize.connect import default_event_store as default_event_store
    from stabilize.connect import open_event_store as open_event_store

__all__ = [
    "TERMINAL_EVENTS",
    "CommitWatcher",
    "Event",
    "EventBus",
    "EventRecorder",
    "EventReplayer",
    "EventStore",
    "EventType",
    "PostgresEventStore",
    "ReplayError",
    "SqliteEventStore",
    "can_follow",
    "configure_event_sourcing",
    "current_event_store",
    "default_event_store",
    "disable_event_sourcing",
    "emit_progress",
    "follow_commits",
    "get_event_bus",
    "open_event_store",
    "recording_enabled",
]


def __getattr__(name: str) -> Any:
    """Load a name of the storage layer on first use (PEP 562)."""
    value: Any
    if name in ("CommitWatcher", "EventStore"):
        from stabilize.backends import _base

        value = getattr(_base, name)
    elif name in ("default_event_store", "open_event_store"):
        from stabilize import connect

        value = getattr(connect, name)
    elif name == "SqliteEventStore":
        from stabilize.backends.sqlite import SqliteEventStore

        value = SqliteEventStore
    elif name == "PostgresEventStore":
        from stabilize.backends.postgres import PostgresEventStore

        value = PostgresEventStore
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
