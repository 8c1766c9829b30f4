"""Schema versions of a PostgreSQL schema: reading them, and applying pending migrations."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from stabilize.backends._dialect import MigrationStatus
from stabilize.backends.postgres._connection import DEFAULT_SCHEMA, _quiet_rollback
from stabilize.backends.sql import migrations
from stabilize.errors import SchemaVersionError

if TYPE_CHECKING:
    import psycopg

VERSION_TABLE = "stabilize_schema_version"


def advisory_key(schema: str | None) -> int:
    """The advisory-lock key that serialises migrations of a schema (a signed 64-bit int)."""
    digest = hashlib.blake2b(
        f"stabilize:migrate:{schema or DEFAULT_SCHEMA}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def read_migration_status(conn: psycopg.Connection[Any], where: str) -> MigrationStatus:
    """Read the schema version through ``conn`` (whose ``search_path`` names the schema)."""
    latest = migrations("postgres")[-1][0]
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    current = 0
    if row and row[0]:
        found = conn.execute(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}").fetchone()
        current = int(found[0]) if found else 0
    conn.rollback()
    return MigrationStatus(where, current, latest)


def apply_migrations(
    conn: psycopg.Connection[Any], schema: str | None, where: str
) -> MigrationStatus:
    """Create the schema if needed and apply pending migrations in one transaction.

    The transaction holds an advisory lock derived from the schema name, so workers that
    start at once apply each migration exactly once. Returns the status found before.

    Raises:
        SchemaVersionError: the schema is newer than this stabilize.
    """
    from psycopg import sql

    known = migrations("postgres")
    latest = known[-1][0]
    conn.rollback()
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(schema),))
        if schema is not None:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
            "version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}").fetchone()
        current = int(row[0]) if row else 0
        status = MigrationStatus(where, current, latest)
        if status.too_new:
            raise _too_new(status)
        for version, script in known:
            if version > current:
                conn.execute(script)
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (version,))
        conn.commit()
    except BaseException:
        _quiet_rollback(conn)
        raise
    return status


def _too_new(status: MigrationStatus) -> SchemaVersionError:
    return SchemaVersionError(
        f"{status.location} has schema version {status.current}, but this stabilize knows "
        f"only up to {status.latest}: upgrade stabilize-core to use it"
    )
