"""The event log in PostgreSQL, appended in the engine's own transactions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from stabilize.backends.postgres import PoolOptions, PostgresBackend
from stabilize.events.model import Event

if TYPE_CHECKING:
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
        sql = (
            "SELECT workflow_id, sequence, event_type, entity_type, entity_id, timestamp, data "
            "FROM events WHERE workflow_id = %s AND sequence > %s ORDER BY sequence"
        )
        params: tuple[Any, ...] = (workflow_id, since)
        if limit is not None:
            sql += " LIMIT %s"
            params = (*params, limit)
        with self.backend.read() as tx:
            tx.cur.execute(sql, params)
            rows = tx.cur.fetchall()
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def count(self) -> int:
        """The number of events stored."""
        with self.backend.read() as tx:
            tx.cur.execute("SELECT count(*) FROM events")
            return int(tx.cur.fetchone()[0])

    def close(self) -> None:
        """Nothing to release: the connection pool belongs to the shared backend."""
