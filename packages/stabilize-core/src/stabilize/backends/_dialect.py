"""What a dialect package offers to the code above it, which never names a dialect.

Each dialect package (``stabilize.backends.<dialect>``) exposes one object of this shape;
:mod:`stabilize.backends._schemes` finds it from a database URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from stabilize.backends._base import EventStore
from stabilize.persistence.store import WorkflowStore
from stabilize.queue.queue import Queue


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


class Dialect(Protocol):
    """The entry point of one dialect package: opening its databases by URL.

    ``schema`` is a namespace inside the database where the dialect has them (PostgreSQL);
    a dialect without raises ``ValueError`` when one is given.
    """

    name: str
    """The dialect's name (the ``dialect`` of its backends)."""

    def check_url(self, url: str) -> None:
        """Refuse a URL of this dialect's scheme that names no database.

        Raises:
            DatabaseUrlError: naming what is wrong with the URL.
        """
        ...

    def open_database(
        self, url: str, schema: str | None, *, create: bool
    ) -> tuple[WorkflowStore, Queue]:
        """The store and the queue of the database (see ``stabilize.connect``)."""
        ...

    def open_event_store(self, url: str, schema: str | None, *, create: bool) -> EventStore:
        """The event log in the database (see ``stabilize.events.open_event_store``)."""
        ...

    def migration_status(
        self, url: str, schema: str | None, *, must_exist: bool
    ) -> MigrationStatus:
        """The schema version of the database, changing nothing."""
        ...

    def migrate_up(self, url: str, schema: str | None) -> tuple[MigrationStatus, MigrationStatus]:
        """Apply pending migrations; the status before and after."""
        ...

    def describe_failure(self, exc: BaseException, url: str) -> str | None:
        """One line for a failure this dialect can say more about (None: nothing to add)."""
        ...
