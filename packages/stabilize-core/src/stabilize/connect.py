"""Open a store and a queue from a database URL (for command-line tools and services)."""

from __future__ import annotations

import sys

from stabilize.errors import DatabaseUrlError, StabilizeError
from stabilize.persistence.store import PostgresWorkflowStore, SqliteWorkflowStore, WorkflowStore
from stabilize.queue.queue import PostgresQueue, Queue, SqliteQueue

_POSTGRES_SCHEMES = ("postgres://", "postgresql://")

URL_FORMS = "sqlite:///path/to/file.db, postgresql://user@host:5432/dbname or postgres://..."
"""The ``--db-url`` forms the ``stabilize`` commands accept (for messages)."""


def is_postgres_url(url: str) -> bool:
    """True for ``postgres://`` and ``postgresql://`` URLs."""
    return url.startswith(_POSTGRES_SCHEMES)


def check_database_url(url: str) -> None:
    """Refuse a ``--db-url`` that is not a SQLite or PostgreSQL URL.

    The library also takes a plain path for SQLite; a command does not, so that a typo
    (``--db-url garbage``) is not taken for a file name.

    Raises:
        DatabaseUrlError: naming the URL and the accepted forms.
    """
    if is_postgres_url(url):
        return
    if url.startswith("sqlite:"):
        from stabilize.backends.sqlite import sqlite_path

        try:
            sqlite_path(url)
        except ValueError as exc:
            raise DatabaseUrlError(str(exc)) from None
        return
    raise DatabaseUrlError(f"not a database URL: {url!r} (accepted: {URL_FORMS})")


def open_database(
    url: str, schema: str | None = None, *, create: bool = True
) -> tuple[WorkflowStore, Queue]:
    """The store and the queue of the database ``url`` names (SQLite or PostgreSQL).

    Args:
        url: ``sqlite:///path.db`` (or a plain path) or ``postgresql://...``.
        schema: The PostgreSQL schema (not allowed for SQLite).
        create: Create the database (file, schema, tables) or migrate it as needed, as the
            store constructors do. False opens only a stabilize database that exists at
            the current version, and leaves everything untouched otherwise: what the
            ``stabilize`` commands other than ``mg-up`` and ``demo`` do.

    Raises:
        ValueError: a schema was given for SQLite, or the URL is not understood.
        DatabaseNotFoundError: ``create`` is False and there is no stabilize database.
        SchemaVersionError: the database is newer than this stabilize (or, without
            ``create``, older).
    """
    # The queue opens the backend the store opened (one per file or schema and process),
    # so whether anything may be created is decided once, by the store.
    if is_postgres_url(url):
        pg_store = PostgresWorkflowStore(url, schema=schema, create_tables=create)
        return pg_store, PostgresQueue(url, schema=schema)
    if schema is not None:
        raise ValueError("--schema applies to PostgreSQL URLs only")
    store = SqliteWorkflowStore(url, create=create)
    return store, SqliteQueue(url)


def describe_failure(exc: BaseException, url: str | None = None) -> str:
    """One line saying why opening or using the database ``url`` failed (for commands).

    A PostgreSQL server that cannot be reached is named by host and port; the driver's
    own multi-line messages are folded into one line.
    """
    if url is not None and is_postgres_url(url) and _is_connection_failure(exc):
        from stabilize.backends._pg_connection import server_address

        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = first.rsplit("failed: ", 1)[-1].strip()
        text = f"cannot connect to PostgreSQL at {server_address(url)}: {reason}"
    elif isinstance(exc, StabilizeError | ValueError | ImportError | OSError):
        text = str(exc) or type(exc).__name__
    else:  # a driver error: name its kind, the message alone may be cryptic
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _is_connection_failure(exc: BaseException) -> bool:
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.OperationalError):
        return False
    # Also raised when a server goes away mid-statement; only a failed connect says so.
    return str(exc).lower().startswith(("connection failed", "connection to server"))
