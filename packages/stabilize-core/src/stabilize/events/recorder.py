"""Event recording: where events are stored, and which log a reader should open.

The recording setting itself is in :mod:`stabilize.events.recording` and progress updates
in :mod:`stabilize.events.progress`; both are re-exported here, where they used to live.
"""

from __future__ import annotations

from typing import Any

from stabilize.backends._base import Backend, EventStore
from stabilize.backends._schemes import dialect_for_url
from stabilize.events.progress import emit_progress
from stabilize.events.recording import (
    EventRecorder,
    configure_event_sourcing,
    current_event_store,
    disable_event_sourcing,
    event_table_for,
    publishing_enabled,
    recording_enabled,
)

__all__ = [
    "EventRecorder",
    "EventStore",
    "configure_event_sourcing",
    "current_event_store",
    "default_event_store",
    "disable_event_sourcing",
    "emit_progress",
    "event_table_for",
    "open_event_store",
    "publishing_enabled",
    "recording_enabled",
]


def default_event_store(workflow_id: str | None = None) -> EventStore | None:
    """The event log a reader in this process should use for ``workflow_id``.

    The store given to :func:`configure_event_sourcing` if there is one; otherwise the log
    in the database of an engine opened in this process: the one that holds the workflow
    (or the only one open). None when no such database is known.
    """
    configured = current_event_store()
    if configured is not None:
        return configured
    backends = Backend.open_backends()
    if workflow_id is not None:
        for backend in backends:
            if backend.has_workflow(workflow_id):
                return backend.own_event_store()
    if len(backends) == 1:
        return backends[0].own_event_store()
    return None


def open_event_store(url: str, schema: str | None = None, *, create: bool = True) -> EventStore:
    """The event log in the database ``url`` names (what ``--db-url`` options open).

    Args:
        url: ``sqlite:///path.db`` (or a path) or ``postgresql://...``.
        schema: The PostgreSQL schema (not allowed for SQLite).
        create: Create the log (file, schema, table) if missing. False opens only an
            existing log, changing nothing otherwise (what ``stabilize serve`` does).

    Raises:
        DatabaseUrlError: the URL names no database stabilize knows.
        ValueError: a schema was given for SQLite.
        DatabaseNotFoundError: ``create`` is False and there is no log.
        SchemaVersionError: the database is newer than this stabilize (or, without
            ``create``, older).
    """
    return dialect_for_url(url).open_event_store(url, schema, create=create)


def __getattr__(name: str) -> Any:
    # SqliteEventStore used to be defined here; loaded on first use, so that importing
    # this module loads no dialect.
    if name == "SqliteEventStore":
        from stabilize.backends.sqlite import SqliteEventStore

        return SqliteEventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
