"""Open a store, a queue or an event log from a database URL (for commands and services).

The URL's scheme picks the dialect package (:mod:`stabilize.backends._schemes`); nothing
here knows one dialect from another.
"""

from __future__ import annotations

from stabilize.backends._base import Backend, EventStore
from stabilize.backends._schemes import URL_FORMS, dialect_for_url, find_entry
from stabilize.errors import DatabaseUrlError, StabilizeError
from stabilize.events.recording import current_event_store
from stabilize.persistence.store import WorkflowStore
from stabilize.queue.queue import Queue

__all__ = [
    "URL_FORMS",
    "check_database_url",
    "default_event_store",
    "describe_failure",
    "open_database",
    "open_event_store",
]


def check_database_url(url: str) -> None:
    """Refuse a ``--db-url`` that names no database stabilize can use.

    The library also takes a plain path for SQLite; a command does not, so that a typo
    (``--db-url garbage``) is not taken for a file name.

    Raises:
        DatabaseUrlError: naming the URL and the accepted forms.
    """
    dialect_for_url(url, plain_paths=False).check_url(url)


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
        DatabaseUrlError: the URL names no database stabilize knows.
        ValueError: a schema was given for SQLite, or the URL is not understood.
        DatabaseNotFoundError: ``create`` is False and there is no stabilize database.
        SchemaVersionError: the database is newer than this stabilize (or, without
            ``create``, older).
    """
    return dialect_for_url(url).open_database(url, schema, create=create)


def describe_failure(exc: BaseException, url: str | None = None) -> str:
    """One line saying why opening or using the database ``url`` failed (for commands).

    A PostgreSQL server that cannot be reached is named by host and port; the driver's
    own multi-line messages are folded into one line.
    """
    text: str | None = None
    if url is not None:
        try:
            entry = find_entry(url)
        except DatabaseUrlError:
            pass
        else:
            text = entry.load().describe_failure(exc, url)
    if text is None:
        if isinstance(exc, StabilizeError | ValueError | ImportError | OSError):
            text = str(exc) or type(exc).__name__
        else:  # a driver error: name its kind, the message alone may be cryptic
            text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def default_event_store(workflow_id: str | None = None) -> EventStore | None:
    """The event log a reader in this process should use for ``workflow_id``.

    The store given to :func:`configure_event_sourcing` if there is one; otherwise the log
    in the database of an engine opened in this process: the one that holds the workflow
    (or the only one open). None when no such database is known.
    """
    configured = current_event_store()
    if configured is not None:
        return configured
    backends = Backend.open_backends()
    if workflow_id is not None:
        for backend in backends:
            if backend.has_workflow(workflow_id):
                return backend.own_event_store()
    if len(backends) == 1:
        return backends[0].own_event_store()
    return None


def open_event_store(url: str, schema: str | None = None, *, create: bool = True) -> EventStore:
    """The event log in the database ``url`` names (what ``--db-url`` options open).

    Args:
        url: ``sqlite:///path.db`` (or a path) or ``postgresql://...``.
        schema: The PostgreSQL schema (not allowed for SQLite).
        create: Create the log (file, schema, table) if missing. False opens only an
            existing log, changing nothing otherwise (what ``stabilize serve`` does).

    Raises:
        DatabaseUrlError: the URL names no database stabilize knows.
        ValueError: a schema was given for SQLite.
        DatabaseNotFoundError: ``create`` is False and there is no log.
        SchemaVersionError: the database is newer than this stabilize (or, without
            ``create``, older).
    """
    return dialect_for_url(url).open_event_store(url, schema, create=create)
