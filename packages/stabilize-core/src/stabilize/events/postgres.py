"""The event log in PostgreSQL, appended in the engine's own transactions."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from stabilize.backends._pg_connection import RECHECK_S, _Listener, event_channel
from stabilize.backends.postgres import PoolOptions, PostgresBackend
from stabilize.events.log import (
    COUNT_EVENTS_SQL,
    recent_heads_sql,
    select_events_params,
    select_events_sql,
    unpack,
)
from stabilize.events.model import Event

if TYPE_CHECKING:
    import psycopg

    from stabilize.backends._base import Backend


class PostgresEventStore:
    """The ``events`` table of a PostgreSQL schema.

    When the engine's store and queue use the same database, events are appended in the
    transaction of the transition that caused them: in the same schema directly, in
    another schema of that database by its qualified name. Events of an engine on another
    database (or on SQLite) are not recorded by this store.

    Args:
        connection_string: A ``postgresql://`` URL.
        schema: The schema holding the ``events`` table (``None``: the default).
        create_tables: Create the schema and apply pending migrations if needed.
        options: Pool settings, used when this store opens the schema first.
    """

    def __init__(
        self,
        connection_string: str,
        schema: str | None = None,
        create_tables: bool = True,
        options: PoolOptions | None = None,
    ) -> None:
        self.backend = PostgresBackend.for_url(
            connection_string, schema, options, create_tables=create_tables
        )
        self.connection_string = connection_string
        self.schema = schema

    @classmethod
    def of_backend(cls, backend: PostgresBackend) -> PostgresEventStore:
        """The log in the schema of an open backend (sharing its pool)."""
        store = cls.__new__(cls)
        store.backend = backend
        store.connection_string = backend.url
        store.schema = backend.schema
        return store

    def event_table_for(self, backend: Backend) -> str | None:
        """``""`` in this schema, ``"<schema>".`` in another schema of the same database."""
        if not isinstance(backend, PostgresBackend) or backend.url != self.backend.url:
            return None
        mine = self.backend.current_schema
        if backend is self.backend or backend.current_schema == mine:
            return ""
        return f'"{mine}".'

    def get_events(self, workflow_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events of one workflow with ``sequence > since``, in order."""
        sql = select_events_sql("%s", limit=limit is not None)
        with self.backend.read() as tx:
            tx.cur.execute(sql, select_events_params(workflow_id, since, limit))
            rows = tx.cur.fetchall()
        return unpack(rows, since, limit)

    def recent_heads(self, since_ms: int, application: str | None = None) -> dict[str, int]:
        """Workflows with events recorded at or after ``since_ms``, and the last sequence of each.

        Args:
            since_ms: Epoch milliseconds (the time the engine wrote with the transition).
            application: Only workflows of this application (from the ``workflows`` table
                of this schema).
        """
        sql = recent_heads_sql("%s", application=application is not None)
        params: tuple[Any, ...] = (since_ms,) if application is None else (since_ms, application)
        with self.backend.read() as tx:
            tx.cur.execute(sql, params)
            rows = tx.cur.fetchall()
        return {str(wf): int(seq) for wf, seq in rows}

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this log.

        Each commit that records events of a workflow sends its id there (a channel of its
        own: queue workers do not listen to it).
        """
        return event_channel(self.backend.current_schema)

    def listen(self, workflow_id: str | None = None) -> EventListener:
        """A dedicated connection listening on :attr:`channel` (close it when done).

        Args:
            workflow_id: Wake only for this workflow's events (``None``: any workflow).
        """
        from psycopg import sql

        conn = self.backend.connect(autocommit=True)
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        return EventListener(conn, workflow_id)

    def count(self) -> int:
        """The number of events stored."""
        with self.backend.read() as tx:
            tx.cur.execute(COUNT_EVENTS_SQL)
            return int(tx.cur.fetchone()[0])

    def close(self) -> None:
        """Nothing to release: the connection pool belongs to the shared backend."""


class EventListener(_Listener):
    """A connection LISTENing for recorded events (from :meth:`PostgresEventStore.listen`).

    Notifications are sent at commit, by the engine of any process; one that is lost (the
    connection broke, or it was sent before ``LISTEN``) is not sent again, so a reader
    still reads the log at least every so often.
    """

    def __init__(self, conn: psycopg.Connection[Any], workflow_id: str | None = None) -> None:
        super().__init__(conn)
        self.workflow_id = workflow_id

    def _relevant(self) -> bool:
        """Consume the buffered notifications; True if one is about our workflow."""
        payloads = [n.payload for n in self.conn.notifies(timeout=0)]
        if self.workflow_id is None:
            return bool(payloads)
        return self.workflow_id in payloads

    def wait_for_events(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for events of the workflow to commit.

        Returns:
            True on such a notification, False after the timeout or on :meth:`wake`.

        Raises:
            psycopg.Error, OSError: the connection failed (close this listener).
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._relevant():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            _, woken = self.select(min(remaining, RECHECK_S))
            if woken:
                return self._relevant()

    def wait(self, timeout: float) -> None:
        """:meth:`wait_for_events`, ignoring its result."""
        self.wait_for_events(timeout)
