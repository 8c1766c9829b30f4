"""Schema migrations of any backend, by database URL (what ``stabilize mg-up`` runs).

Each dialect keeps and applies its versions its own way (PostgreSQL: a version table and
an advisory lock; SQLite: ``PRAGMA user_version`` and the file's write lock).
"""

from __future__ import annotations

from stabilize.backends._dialect import MigrationStatus
from stabilize.backends._schemes import dialect_for_url

__all__ = ["MigrationStatus", "migrate_up", "migration_status"]


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
        DatabaseUrlError: the URL names no database stabilize knows.
        ValueError: a schema was given for a SQLite URL, or the URL is not understood.
        ImportError: a PostgreSQL URL, and psycopg is not installed.
    """
    return dialect_for_url(url).migration_status(url, schema, must_exist=must_exist)


def migrate_up(url: str, schema: str | None = None) -> tuple[MigrationStatus, MigrationStatus]:
    """Apply pending migrations; return the status before and after.

    Safe to run from several processes at once.

    Raises:
        SchemaVersionError: the database was migrated by a newer stabilize.
        DatabaseUrlError: the URL names no database stabilize knows.
        ValueError: a schema was given for a SQLite URL, or the URL is not understood.
        ImportError: a PostgreSQL URL, and psycopg is not installed.
    """
    return dialect_for_url(url).migrate_up(url, schema)
