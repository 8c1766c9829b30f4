"""Open a store and a queue from a database URL (for command-line tools and services)."""

from __future__ import annotations

from stabilize.persistence.store import PostgresWorkflowStore, SqliteWorkflowStore, WorkflowStore
from stabilize.queue.queue import PostgresQueue, Queue, SqliteQueue

_POSTGRES_SCHEMES = ("postgres://", "postgresql://")


def is_postgres_url(url: str) -> bool:
    """True for ``postgres://`` and ``postgresql://`` URLs."""
    return url.startswith(_POSTGRES_SCHEMES)


def open_database(url: str, schema: str | None = None) -> tuple[WorkflowStore, Queue]:
    """The store and the queue of the database ``url`` names (SQLite or PostgreSQL).

    Args:
        url: ``sqlite:///path.db`` (or a plain path) or ``postgresql://...``.
        schema: The PostgreSQL schema (not allowed for SQLite).

    Raises:
        ValueError: a schema was given for SQLite, or the URL is not understood.
    """
    if is_postgres_url(url):
        return PostgresWorkflowStore(url, schema=schema), PostgresQueue(url, schema=schema)
    if schema is not None:
        raise ValueError("--schema applies to PostgreSQL URLs only")
    return SqliteWorkflowStore(url), SqliteQueue(url)
