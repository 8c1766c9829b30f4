"""The message queue and the processor that drains it."""

from __future__ import annotations

from stabilize.queue.queue import PostgresQueue, Queue, SqliteQueue

__all__ = ["PostgresQueue", "Queue", "SqliteQueue"]
