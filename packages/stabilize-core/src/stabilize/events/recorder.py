"""Event recording: where events are stored, and progress updates from tasks."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from stabilize.backends.sql import resource_text
from stabilize.events.bus import get_event_bus
from stabilize.events.model import Event, EventType

if TYPE_CHECKING:
    from stabilize.backends._base import Backend
    from stabilize.models.stage import StageExecution


class EventStore(Protocol):
    """Where recorded events are kept (:class:`SqliteEventStore`, ``PostgresEventStore``)."""

    def event_table_for(self, backend: Backend) -> str | None:
        """The prefix of the ``events`` table inside ``backend``'s transactions.

        ``""`` when the table is in the backend's own database (and schema), a qualifier
        such as ``"ev."`` when it is reachable from the same transaction, or None when
        events of that backend cannot be recorded atomically here (nothing is recorded).
        """
        ...

    def get_events(self, workflow_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events of one workflow with ``sequence > since``, in order."""
        ...

    def count(self) -> int:
        """The number of events stored."""
        ...

    def close(self) -> None:
        """Release this store's own connections."""
        ...


class SqliteEventStore:
    """The event log in a SQLite file.

    When it is the engine's own file, events are appended in the engine's transaction.
    When it is another file, that file is attached to the engine's connection: the append
    still happens in the same transaction, atomic per file (SQLite does not make a commit
    across two WAL files atomic if the machine loses power in between).

    Args:
        connection_string: ``sqlite:///path/to/events.db``.
        create_tables: Create the ``events`` table if it does not exist.
    """

    def __init__(self, connection_string: str, create_tables: bool = True) -> None:
        from stabilize.backends.sqlite import sqlite_path

        self.path = sqlite_path(connection_string)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=60
        )
        self._conn.execute("PRAGMA busy_timeout = 60000")
        if create_tables:
            script = resource_text("sqlite", "events_0001.sql").replace("{schema}", "")
            with self._lock:
                self._conn.executescript(script)

    def event_table_for(self, backend: Backend) -> str | None:
        """``""`` for the engine's own file, ``"ev."`` for another one (attached), else None."""
        from stabilize.backends.sqlite import SqliteBackend

        if not isinstance(backend, SqliteBackend):
            return None
        return backend.events_prefix_for_file(self.path)

    def get_events(self, workflow_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events of one workflow with ``sequence > since``, in order."""
        sql = (
            "SELECT workflow_id, sequence, event_type, entity_type, entity_id, timestamp, data "
            "FROM events WHERE workflow_id = ? AND sequence > ? ORDER BY sequence"
        )
        params: tuple[Any, ...] = (workflow_id, since)
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def count(self) -> int:
        """The number of events stored."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self) -> None:
        """Close this store's own connection."""
        with self._lock:
            self._conn.close()


@dataclass
class EventRecorder:
    """The active event-recording configuration (see :func:`configure_event_sourcing`)."""

    event_store: EventStore
    publish_to_bus: bool = True


_lock = threading.Lock()
_recorder: EventRecorder | None = None


def configure_event_sourcing(
    event_store: EventStore, publish_to_bus: bool = True, bus_max_workers: int = 4
) -> EventRecorder:
    """Record every workflow, stage and task transition from now on.

    Each event is appended in the same transaction as the transition that caused it, with
    a per-workflow sequence number.

    Args:
        event_store: Where to record.
        publish_to_bus: Also deliver committed events to in-process listeners.
        bus_max_workers: Accepted for compatibility; delivery is synchronous.
    """
    global _recorder
    with _lock:
        _recorder = EventRecorder(event_store, publish_to_bus)
        return _recorder


def disable_event_sourcing() -> None:
    """Stop recording events."""
    global _recorder
    with _lock:
        _recorder = None


def current_event_store() -> EventStore | None:
    """The configured event store, if recording is on."""
    recorder = _recorder
    return recorder.event_store if recorder is not None else None


def emit_progress(
    stage: StageExecution, message: str = "", *, recorder: EventRecorder | None = None, **data: Any
) -> None:
    """Report progress from inside a task.

    Listeners in this process get a ``custom.progress`` event at once. When event recording
    is on, the update is also recorded durably with the task's result (in the same
    transaction), so high-rate updates cost no commit of their own; after a crash, updates
    of the interrupted execution are lost along with the execution itself.
    """
    payload = {"message": message, "stage_id": stage.id, "ref_id": stage.ref_id, **data}
    buffer = stage._progress
    if buffer is not None:
        buffer.append(payload)
    bus = get_event_bus()
    workflow_id = stage.workflow_id
    if bus.has_listeners and workflow_id is not None:
        bus.publish(
            Event(
                workflow_id,
                0,
                EventType.CUSTOM_PROGRESS.value,
                "stage",
                stage.id,
                int(time.time() * 1000),
                payload,
            )
        )
