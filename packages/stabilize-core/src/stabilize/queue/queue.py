"""The message queue: pending work of every workflow, in the backend's database."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING

from stabilize.backends._base import Backend
from stabilize.backends.sqlite import SqliteBackend

if TYPE_CHECKING:
    from stabilize.backends.postgres import PoolOptions

DEFAULT_TABLE = "queue_messages"


class Queue:
    """Pending messages on a backend (use :class:`SqliteQueue` and friends).

    Args:
        backend: The database.
        lock_duration: How long a claimed message stays reserved for its worker.
        max_attempts: Deliveries of one message before it is moved to the dead letters
            (a task whose worker keeps crashing then fails instead of looping forever).
    """

    def __init__(
        self,
        backend: Backend,
        lock_duration: timedelta = timedelta(seconds=60),
        max_attempts: int = 10,
    ) -> None:
        if lock_duration.total_seconds() <= 0:
            raise ValueError("lock_duration must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.backend = backend
        self.lock_duration = lock_duration
        self.max_attempts = max_attempts

    def size(self) -> int:
        """Messages in the queue (due, delayed or leased)."""
        with self.backend.read() as tx:
            return tx.queue_depth()[0]

    def ready_count(self) -> int:
        """Messages due now and not leased."""
        now = int(time.time() * 1000)
        with self.backend.read() as tx:
            tx.cur.execute(tx.q["count_ready"], (now, now))
            return int(tx.cur.fetchone()[0])


class SqliteQueue(Queue):
    """The queue in a SQLite file; shares the file (and transactions) with the store.

    Args:
        connection_string: ``sqlite:///path/to/file.db`` (the store's file).
        table_name: Only ``queue_messages`` is supported.
        lock_duration: How long a claimed message stays reserved for its worker.
        max_attempts: Deliveries of one message before it is dead-lettered.

    Raises:
        ValueError: another ``table_name`` was asked for.
    """

    def __init__(
        self,
        connection_string: str,
        table_name: str = DEFAULT_TABLE,
        lock_duration: timedelta = timedelta(seconds=60),
        max_attempts: int = 10,
    ) -> None:
        if table_name != DEFAULT_TABLE:
            raise ValueError(
                f"table_name={table_name!r}: the queue shares transactions with the store and "
                f"always uses the table {DEFAULT_TABLE!r}; use a separate database file instead"
            )
        super().__init__(SqliteBackend.for_url(connection_string), lock_duration, max_attempts)
        self.connection_string = connection_string
        self.table_name = table_name

    def _create_table(self) -> None:
        """Create (or migrate) the schema; the constructor already does, so this is safe."""
        backend = self.backend
        assert isinstance(backend, SqliteBackend)
        backend.migrate()


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
        from stabilize.backends.postgres import PostgresBackend

        if table_name != DEFAULT_TABLE:
            raise ValueError(
                f"table_name={table_name!r}: the queue shares transactions with the store and "
                f"always uses the table {DEFAULT_TABLE!r}; use another schema instead"
            )
        backend = PostgresBackend.for_url(connection_string, schema, options)
        super().__init__(backend, lock_duration, max_attempts)
        self.connection_string = connection_string
        self.table_name = table_name
        self.schema = schema

    def _create_table(self) -> None:
        """Apply pending migrations (the constructor already does, so this is safe)."""
        from stabilize.backends.postgres import PostgresBackend

        backend = self.backend
        assert isinstance(backend, PostgresBackend)
        backend.migrate()
