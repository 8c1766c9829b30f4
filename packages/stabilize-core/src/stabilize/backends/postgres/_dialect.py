"""The PostgreSQL dialect's entry point: opening schemas by URL (see ``backends._schemes``)."""

from __future__ import annotations

from stabilize.backends._dialect import MigrationStatus
from stabilize.backends.postgres._backend import PostgresEventStore
from stabilize.backends.postgres._connection import (
    connect,
    describe,
    describe_connection_failure,
)
from stabilize.backends.postgres._schema import apply_migrations, read_migration_status
from stabilize.backends.postgres._stores import PostgresQueue, PostgresWorkflowStore
from stabilize.errors import DatabaseNotFoundError


class PostgresDialect:
    """Opens PostgreSQL schemas named by ``postgresql://`` (or ``postgres://``) URLs."""

    name = "postgres"

    def check_url(self, url: str) -> None:
        """Accept any ``postgresql://`` URL: the server says what is wrong with it."""

    def open_database(
        self, url: str, schema: str | None, *, create: bool
    ) -> tuple[PostgresWorkflowStore, PostgresQueue]:
        """The store and the queue of the schema (``None``: the connection's default)."""
        # The queue opens the backend the store opened (one per schema and process), so
        # whether anything may be created is decided once, by the store.
        store = PostgresWorkflowStore(url, schema=schema, create_tables=create)
        return store, PostgresQueue(url, schema=schema)

    def open_event_store(self, url: str, schema: str | None, *, create: bool) -> PostgresEventStore:
        """The event log in the schema (``None``: the connection's default)."""
        return PostgresEventStore(url, schema=schema, create_tables=create)

    def migration_status(
        self, url: str, schema: str | None, *, must_exist: bool
    ) -> MigrationStatus:
        """The versions recorded in the schema's version table.

        Raises:
            DatabaseNotFoundError: ``must_exist``, and the named schema does not exist.
        """
        where = describe(url, schema)
        with connect(url, schema) as conn:
            if must_exist and schema is not None:
                found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
                if found.fetchone() is None:
                    raise DatabaseNotFoundError(
                        f"no stabilize database in {where}: schema {schema} does not exist "
                        f"(run 'stabilize mg-up --db-url ... --schema {schema}' to create it)"
                    )
            return read_migration_status(conn, where)

    def migrate_up(self, url: str, schema: str | None) -> tuple[MigrationStatus, MigrationStatus]:
        """Create the schema if needed and apply pending migrations under an advisory lock.

        Raises:
            SchemaVersionError: the schema was migrated by a newer stabilize.
        """
        where = describe(url, schema)
        with connect(url, schema) as conn:
            before = apply_migrations(conn, schema, where)
            after = read_migration_status(conn, where)
        return before, after

    def describe_failure(self, exc: BaseException, url: str) -> str | None:
        """A server that cannot be reached, named by host and port."""
        return describe_connection_failure(exc, url)


DIALECT = PostgresDialect()
"""The entry point :mod:`stabilize.backends._schemes` loads."""
