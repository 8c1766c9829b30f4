"""Event recording: where events are stored, and progress updates from tasks."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from stabilize._json import describe_unencodable
from stabilize.backends.sql import resource_text
from stabilize.errors import ContextSerializationError, EventStoreError
from stabilize.events.bus import get_event_bus
from stabilize.events.log import (
    COUNT_EVENTS_SQL,
    recent_heads_sql,
    select_events_params,
    select_events_sql,
    unpack,
)
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

    def recent_heads(self, since_ms: int, application: str | None = None) -> dict[str, int]:
        """Workflows with events recorded at or after ``since_ms`` -> their last sequence.

        ``since_ms`` compares with the time the engine wrote in each transition (its clock
        when the transaction began, before it committed): readers that follow the log
        through this query look back a little to cover transactions still committing.
        """
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
        from stabilize.backends.sqlite import (
            check_schema_version,
            sqlite_path,
            upgrade_event_table,
        )

        self.path = sqlite_path(connection_string)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=60
        )
        self._conn.execute("PRAGMA busy_timeout = 60000")
        try:
            check_schema_version(self._conn, self.path)  # a newer engine file is refused
        except BaseException:
            self._conn.close()
            raise
        if create_tables:
            # The table migration 0003 creates in an engine's file, here in this one.
            script = resource_text("sqlite", "0003_events.sql")
            with self._lock:
                self._conn.executescript(script)
                upgrade_event_table(self._conn)

    def event_table_for(self, backend: Backend) -> str | None:
        """``""`` for the engine's own file, ``"ev."`` for another one (attached), else None."""
        from stabilize.backends.sqlite import SqliteBackend

        if not isinstance(backend, SqliteBackend):
            return None
        return backend.events_prefix_for_file(self.path)

    def get_events(self, workflow_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events of one workflow with ``sequence > since``, in order."""
        sql = select_events_sql("?", limit=limit is not None)
        with self._lock:
            rows = self._conn.execute(sql, select_events_params(workflow_id, since, limit))
            return unpack(rows.fetchall(), since, limit)

    def recent_heads(self, since_ms: int, application: str | None = None) -> dict[str, int]:
        """Workflows with events recorded at or after ``since_ms``, and the last sequence of each.

        Args:
            since_ms: Epoch milliseconds (the time the engine wrote with the transition).
            application: Only workflows of this application (needs the log in the
                engine's own file, beside the ``workflows`` table).

        Raises:
            EventStoreError: ``application`` was given for a log kept in a file of its own.
        """
        from stabilize.backends.sqlite import EVENT_ROWID_TIME_SHIFT

        sql = recent_heads_sql("?", application=application is not None, rowid_time=True)
        params: tuple[Any, ...] = (int(since_ms) << EVENT_ROWID_TIME_SHIFT, since_ms)
        if application is not None:
            params += (application,)
        with self._lock:
            try:
                rows = self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if application is not None and "workflows" in str(exc):
                    raise EventStoreError(
                        f"{self.path} holds no workflows table: filtering by application "
                        "needs the event log in the engine's own database"
                    ) from None
                raise
        return {str(wf): int(seq) for wf, seq in rows}

    def count(self) -> int:
        """The number of events stored."""
        with self._lock:
            return int(self._conn.execute(COUNT_EVENTS_SQL).fetchone()[0])

    def close(self) -> None:
        """Close this store's own connection."""
        with self._lock:
            self._conn.close()


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
    default); :func:`default_event_store` finds the store of a workflow in both cases.
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


def default_event_store(workflow_id: str | None = None) -> EventStore | None:
    """The event log a reader in this process should use for ``workflow_id``.

    The store given to :func:`configure_event_sourcing` if there is one; otherwise the log
    in the database of an engine opened in this process: the one that holds the workflow
    (or the only one open). None when no such database is known.
    """
    from stabilize.backends._base import Backend

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
        ValueError: a schema was given for SQLite.
        DatabaseNotFoundError: ``create`` is False and there is no log.
        SchemaVersionError: the database is newer than this stabilize (or, without
            ``create``, older).
    """
    from stabilize.connect import is_postgres_url

    if is_postgres_url(url):
        from stabilize.events.postgres import PostgresEventStore

        return PostgresEventStore(url, schema=schema, create_tables=create)
    if schema is not None:
        raise ValueError("a schema applies to PostgreSQL URLs only")
    if not create:
        from stabilize.backends.sqlite import check_event_log

        check_event_log(url)
    return SqliteEventStore(url, create_tables=create)


def emit_progress(
    stage: StageExecution, message: str = "", *, recorder: EventRecorder | None = None, **data: Any
) -> None:
    """Report progress from inside a task.

    Listeners in this process get a ``custom.progress`` event at once. When event recording
    is on (the default) the update is also recorded, without a commit of its own: the
    worker appends the updates of all its running tasks to the log in one commit every
    ``QueueProcessorConfig.progress_flush_interval_seconds`` (0.5 s by default), and the
    last ones with the task's result. Readers in other processes (streams, the gateway)
    see them then. After a crash, the updates recorded before it stay in the log; those
    emitted since the last flush are gone (live listeners saw them), and the task runs
    again, emitting its own.

    Args:
        stage: The stage the task received.
        message: What is happening, in words.
        recorder: The recorder to record with (default: the one the worker set for the
            task, if any).
        **data: Further JSON values, added to the event's data next to ``message``.

    Raises:
        ContextSerializationError: the message or a value of ``data`` cannot be stored
            as JSON (the error names the key); nothing is emitted.
    """
    payload = {"message": message, "stage_id": stage.id, "ref_id": stage.ref_id, **data}
    problem = describe_unencodable(payload, f"progress update of stage {stage.ref_id!r}")
    if problem is not None:
        raise ContextSerializationError(problem, ref_id=stage.ref_id)
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
