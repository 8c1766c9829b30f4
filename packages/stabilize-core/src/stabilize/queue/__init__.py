"""The message queue and the processor that drains it."""

from __future__ import annotations

from stabilize.queue.queue import Queue, SqliteQueue

__all__ = ["Queue", "SqliteQueue"]
