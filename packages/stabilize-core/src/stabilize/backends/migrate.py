"""Schema migrations of any backend, by database URL (what ``stabilize mg-up`` runs).

PostgreSQL keeps the applied versions in a ``stabilize_schema_version`` table of the
schema and applies migrations under an advisory lock; SQLite keeps the version in
``PRAGMA user_version`` and applies them under its write lock.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from stabilize.errors import DatabaseNotFoundError


@dataclass(frozen=True)
class MigrationStatus:
    """Where a database schema stands.

    Attributes:
        location: The database (a file path, or a URL without password and the schema).
        current: The version the database is at (0: no schema yet).
        latest: The newest version this stabilize knows.
    """

    location: str
    current: int
    latest: int

    @property
    def pending(self) -> list[int]:
        """Versions not applied yet."""
        return list(range(self.current + 1, self.latest + 1))

    @property
    def too_new(self) -> bool:
        """True when the database was migrated by a newer stabilize."""
        return self.current > self.latest


def migration_status(
    url: str, schema: str | None = None, *, must_exist: bool = False
) -> MigrationStatus:
    """Read the schema version of the database ``url`` names, changing nothing.

    Args:
        url: ``sqlite:///path.db`` (or a path) or ``postgresql://...``.
        schema: The PostgreSQL schema.
        must_exist: Refuse a SQLite file or a PostgreSQL schema that does not exist,
            instead of reporting version 0 (what ``stabilize mg-status`` does).

    Raises:
        DatabaseNotFoundError: ``must_exist``, and there is no such file or schema.
        ValueError: a schema was given for a SQLite URL, or the URL is not understood.
        ImportError: a PostgreSQL URL, and psycopg is not installed.
    """
    from stabilize.backends import postgres

    if postgres.is_postgres_url(url):
        where = postgres.describe(url, schema)
        with postgres.connect(url, schema) as conn:
            if must_exist and schema is not None:
                found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
                if found.fetchone() is None:
                    raise DatabaseNotFoundError(
                        f"no stabilize database in {where}: schema {schema} does not exist "
                        f"(run 'stabilize mg-up --db-url ... --schema {schema}' to create it)"
                    )
            return postgres.read_migration_status(conn, where)
    from stabilize.backends.sqlite import connect_existing

    path = _sqlite_path(url, schema)
    latest = _sqlite_latest()
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


def migrate_up(url: str, schema: str | None = None) -> tuple[MigrationStatus, MigrationStatus]:
    """Apply pending migrations; return the status before and after.

    Safe to run from several processes at once.

    Raises:
        SchemaVersionError: the database was migrated by a newer stabilize.
        ValueError: a schema was given for a SQLite URL, or the URL is not understood.
        ImportError: a PostgreSQL URL, and psycopg is not installed.
    """
    from stabilize.backends import postgres

    if postgres.is_postgres_url(url):
        where = postgres.describe(url, schema)
        with postgres.connect(url, schema) as conn:
            before = postgres.apply_migrations(conn, schema, where)
            after = postgres.read_migration_status(conn, where)
        return before, after
    from stabilize.backends.sqlite import SqliteBackend

    before = migration_status(url, schema)
    if before.too_new:
        from stabilize.errors import SchemaVersionError

        raise SchemaVersionError(
            f"{before.location} has schema version {before.current}, but this stabilize "
            f"knows only up to {before.latest}: upgrade stabilize-core to use it"
        )
    SqliteBackend.for_url(url).migrate()
    return before, migration_status(url, schema)


def _sqlite_path(url: str, schema: str | None) -> str:
    from stabilize.backends.sqlite import sqlite_path

    if schema is not None:
        raise ValueError("--schema applies to PostgreSQL only; a SQLite file has no schemas")
    return sqlite_path(url)


def _sqlite_latest() -> int:
    from stabilize.backends.sql import migrations

    return migrations("sqlite")[-1][0]
