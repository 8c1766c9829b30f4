"""The message queue and the processor that drains it.

The dialects' queues are loaded on first use, so that importing this package loads no
dialect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stabilize.queue.queue import Queue

if TYPE_CHECKING:
    from stabilize.backends.postgres import PostgresQueue as PostgresQueue
    from stabilize.backends.sqlite import SqliteQueue as SqliteQueue

__all__ = ["PostgresQueue", "Queue", "SqliteQueue"]


def __getattr__(name: str) -> Any:
    """Load a dialect's queue on first use (PEP 562)."""
    value: Any
    if name == "SqliteQueue":
        from stabilize.backends.sqlite import SqliteQueue

        value = SqliteQueue
    elif name == "PostgresQueue":
        from stabilize.backends.postgres import PostgresQueue

        value = PostgresQueue
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
