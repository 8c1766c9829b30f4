"""The SQLite dialect's entry point: opening files by URL (see ``stabilize.backends._schemes``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stabilize.backends._dialect import MigrationStatus
from stabilize.backends.sqlite._backend import SqliteBackend, SqliteEventStore
from stabilize.backends.sqlite._files import connect_existing, sqlite_path
from stabilize.backends.sqlite._schema import check_event_log, latest_version
from stabilize.backends.sqlite._stores import SqliteQueue, SqliteWorkflowStore
from stabilize.errors import DatabaseNotFoundError, DatabaseUrlError, SchemaVersionError


class SqliteDialect:
    """Opens SQLite files named by ``sqlite:///path`` URLs (or, in the library, paths)."""

    name = "sqlite"

    def check_url(self, url: str) -> None:
        """Refuse a ``sqlite:`` URL without a file path.

        Raises:
            DatabaseUrlError: naming the URL and the expected form.
        """
        try:
            sqlite_path(url)
        except ValueError as exc:
            raise DatabaseUrlError(str(exc)) from None

    def open_database(
        self, url: str, schema: str | None, *, create: bool
    ) -> tuple[SqliteWorkflowStore, SqliteQueue]:
        """The store and the queue of the file (a file has no schemas).

        Raises:
            ValueError: a schema was given.
        """
        if schema is not None:
            raise ValueError("--schema applies to PostgreSQL URLs only")
        # The queue opens the backend the store opened (one per file and process), so
        # whether anything may be created is decided once, by the store.
        store = SqliteWorkflowStore(url, create=create)
        return store, SqliteQueue(url)

    def open_event_store(self, url: str, schema: str | None, *, create: bool) -> SqliteEventStore:
        """The event log in the file; without ``create`` the file must hold one already.

        Raises:
            ValueError: a schema was given.
        """
        if schema is not None:
            raise ValueError("a schema applies to PostgreSQL URLs only")
        if not create:
            check_event_log(url)
        return SqliteEventStore(url, create_tables=create)

    def migration_status(
        self, url: str, schema: str | None, *, must_exist: bool
    ) -> MigrationStatus:
        """The file's ``user_version``; a missing file is at version 0 unless ``must_exist``.

        Raises:
            DatabaseNotFoundError: ``must_exist``, and there is no such file.
            ValueError: a schema was given.
        """
        path = _path(url, schema)
        latest = latest_version()
        if must_exist:
            db = connect_existing(path)
        elif path != ":memory:" and not Path(path).exists():
            return MigrationStatus(path, 0, latest)
        else:
            db = sqlite3.connect(path)
        try:
            current = int(db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            if not must_exist:
                raise
            raise DatabaseNotFoundError(f"no stabilize database at {path}: {exc}") from None
        finally:
            db.close()
        return MigrationStatus(path, current, latest)

    def migrate_up(self, url: str, schema: str | None) -> tuple[MigrationStatus, MigrationStatus]:
        """Create the file if needed and apply pending migrations under its write lock.

        Raises:
            SchemaVersionError: the file was migrated by a newer stabilize.
            ValueError: a schema was given.
        """
        before = self.migration_status(url, schema, must_exist=False)
        if before.too_new:
            raise SchemaVersionError(
                f"{before.location} has schema version {before.current}, but this stabilize "
                f"knows only up to {before.latest}: upgrade stabilize-core to use it"
            )
        SqliteBackend.for_url(url).migrate()
        return before, self.migration_status(url, schema, must_exist=False)

    def describe_failure(self, exc: BaseException, url: str) -> str | None:
        """Nothing to add: SQLite's own messages name the file."""
        return None


def _path(url: str, schema: str | None) -> str:
    if schema is not None:
        raise ValueError("--schema applies to PostgreSQL only; a SQLite file has no schemas")
    return sqlite_path(url)


DIALECT = SqliteDialect()
"""The entry point :mod:`stabilize.backends._schemes` loads."""
