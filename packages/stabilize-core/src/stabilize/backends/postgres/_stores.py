"""The PostgreSQL workflow store and queue: both on the one backend of their schema."""

from __future__ import annotations

from datetime import timedelta

from stabilize.backends.postgres._backend import PostgresBackend
from stabilize.backends.postgres._connection import PoolOptions
from stabilize.persistence.store import WorkflowStore
from stabilize.queue.queue import DEFAULT_TABLE, Queue


class PostgresWorkflowStore(WorkflowStore):
    """Workflow state in a PostgreSQL schema, shared by any number of worker processes.

    The store and a :class:`~stabilize.queue.PostgresQueue` on the same URL and schema
    share one connection pool in a process, so state and messages commit together.

    Args:
        connection_string: ``postgresql://user:password@host:5432/dbname``.
        schema: The schema holding the tables (``None``: the connection's default, usually
            ``public``); created if missing when ``create_tables`` is True.
        options: Connection-pool settings (:class:`~stabilize.backends.postgres.PoolOptions`).
        create_tables: Create the schema and apply pending migrations on first use (under
            an advisory lock, so workers starting at once are safe), the default; False
            opens only a schema at the current version (``stabilize mg-up`` creates one)
            and changes nothing otherwise, as for :class:`SqliteWorkflowStore`.
        health_timeout: Seconds :meth:`is_healthy` waits for the database.

    Raises:
        ImportError: psycopg is not installed (``pip install "stabilize-core[postgres]"``).
        ConnectionError: the server cannot be reached (naming its host and port).
        SchemaVersionError: the schema is newer than this stabilize, or not current and
            ``create_tables`` is False.
    """

    def __init__(
        self,
        connection_string: str,
        schema: str | None = None,
        options: PoolOptions | None = None,
        create_tables: bool = True,
        health_timeout: float = 2.0,
    ) -> None:
        self._postgres = PostgresBackend.for_url(
            connection_string, schema, options, create_tables=create_tables
        )
        super().__init__(self._postgres)
        self.connection_string = connection_string
        self.schema = schema
        self.health_timeout = health_timeout

    def is_healthy(self) -> bool:
        """True when the database answers within ``health_timeout`` seconds.

        Returns:
            Whether a trivial query succeeded in time (never raises).
        """
        return self._postgres.ping(self.health_timeout)


class PostgresQueue(Queue):
    """The queue in a PostgreSQL schema; shares the schema (and transactions) with the store.

    Workers on any number of machines drain one queue: they claim messages with
    ``FOR UPDATE SKIP LOCKED`` and idle workers wake on ``LISTEN/NOTIFY``.

    Args:
        connection_string: ``postgresql://user:password@host:5432/dbname`` (the store's).
        table_name: Only ``queue_messages`` is supported.
        lock_duration: How long a claimed message stays reserved for its worker.
        max_attempts: Deliveries of one message before it is dead-lettered.
        schema: The store's schema (``None``: the connection's default).
        options: Connection-pool settings, used when this queue opens the schema first.

    Raises:
        ValueError: another ``table_name`` was asked for.
        ImportError: psycopg is not installed (``pip install "stabilize-core[postgres]"``).
    """

    def __init__(
        self,
        connection_string: str,
        table_name: str = DEFAULT_TABLE,
        lock_duration: timedelta = timedelta(seconds=60),
        max_attempts: int = 10,
        schema: str | None = None,
        options: PoolOptions | None = None,
    ) -> None:
        if table_name != DEFAULT_TABLE:
            raise ValueError(
                f"table_name={table_name!r}: the queue shares transactions with the store and "
                f"always uses the table {DEFAULT_TABLE!r}; use another schema instead"
            )
        self._postgres = PostgresBackend.for_url(connection_string, schema, options)
        super().__init__(self._postgres, lock_duration, max_attempts)
        self.connection_string = connection_string
        self.table_name = table_name
        self.schema = schema

    def _create_table(self) -> None:
        """Apply pending migrations (the constructor already does, so this is safe)."""
        self._postgres.migrate()
