"""The message queue: pending work of every workflow, in the backend's database."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from stabilize.backends._base import Backend

DEFAULT_TABLE = "queue_messages"


class Queue:
    """Pending messages on a backend (use :class:`SqliteQueue` and friends).

    Args:
        backend: The database.
        lock_duration: How long a claimed message stays reserved for its worker.
        max_attempts: Deliveries of one message before it is moved to the dead letters
            (a task whose worker keeps crashing then fails instead of looping forever).
    """

    def __init__(
        self,
        backend: Backend,
        lock_duration: timedelta = timedelta(seconds=60),
        max_attempts: int = 10,
    ) -> None:
        if lock_duration.total_seconds() <= 0:
            raise ValueError("lock_duration must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.backend = backend
        self.lock_duration = lock_duration
        self.max_attempts = max_attempts

    def size(self) -> int:
        """Messages in the queue (due, delayed or leased)."""
        with self.backend.read() as tx:
            return tx.queue_depth()[0]

    def ready_count(self) -> int:
        """Messages due now and not leased."""
        now = int(time.time() * 1000)
        with self.backend.read() as tx:
            tx.cur.execute(tx.q["count_ready"], (now, now))
            return int(tx.cur.fetchone()[0])


def __getattr__(name: str) -> Any:
    # The dialects' queues used to be defined here; loaded on first use, so that importing
    # this module loads no dialect.
    if name == "SqliteQueue":
        from stabilize.backends.sqlite import SqliteQueue

        return SqliteQueue
    if name == "PostgresQueue":
        from stabilize.backends.postgres import PostgresQueue

        return PostgresQueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
