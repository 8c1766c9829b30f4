"""The SQLite workflow store and queue: both on the one backend of their file."""

from __future__ import annotations

from datetime import timedelta

from stabilize.backends.sqlite._backend import SqliteBackend
from stabilize.persistence.store import WorkflowStore
from stabilize.queue.queue import DEFAULT_TABLE, Queue


class SqliteWorkflowStore(WorkflowStore):
    """Workflow state in a SQLite file; the schema is created and migrated in place.

    ``create_tables`` means what it means for :class:`PostgresWorkflowStore`: left out or
    True, the database is created (file and tables) or migrated as needed; False opens an
    existing stabilize database at the current version only, and changes nothing when
    there is none. The file's directory must exist in either case.

    Args:
        connection_string: ``sqlite:///path/to/file.db``.
        create_tables: Create or migrate the database (the default); False: open only.
        create: The same switch under the name the ``stabilize`` commands use; only
            consulted when ``create_tables`` is left out.

    Raises:
        SchemaVersionError: the file is newer than this stabilize (or, when opening
            only, older).
        DatabaseNotFoundError: when opening only, the file or its tables do not exist;
            when creating, the file's directory does not exist.
        ValueError: ``create_tables`` and ``create`` disagree.
    """

    def __init__(
        self, connection_string: str, create_tables: bool | None = None, *, create: bool = True
    ) -> None:
        if create_tables and not create:
            raise ValueError("create_tables=True and create=False disagree; pass only one")
        make = create if create_tables is None else create_tables
        super().__init__(SqliteBackend.for_url(connection_string, create=make))
        self.connection_string = connection_string


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
        self._sqlite = SqliteBackend.for_url(connection_string)
        super().__init__(self._sqlite, lock_duration, max_attempts)
        self.connection_string = connection_string
        self.table_name = table_name

    def _create_table(self) -> None:
        """Create (or migrate) the schema; the constructor already does, so this is safe."""
        self._sqlite.migrate()
