"""Workflow stores: durable state of workflows, stages and tasks.

The dialects' stores (and ``PoolOptions``) are loaded on first use, so that importing this
package loads no dialect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stabilize.persistence.store import WorkflowNotFoundError, WorkflowStore

if TYPE_CHECKING:
    from stabilize.backends.postgres import PoolOptions as PoolOptions
    from stabilize.backends.postgres import PostgresWorkflowStore as PostgresWorkflowStore
    from stabilize.backends.sqlite import SqliteWorkflowStore as SqliteWorkflowStore

__all__ = [
    "PoolOptions",
    "PostgresWorkflowStore",
    "SqliteWorkflowStore",
    "WorkflowNotFoundError",
    "WorkflowStore",
]


def __getattr__(name: str) -> Any:
    """Load a dialect's name on first use (PEP 562)."""
    value: Any
    if name == "SqliteWorkflowStore":
        from stabilize.backends.sqlite import SqliteWorkflowStore

        value = SqliteWorkflowStore
    elif name in ("PoolOptions", "PostgresWorkflowStore"):
        from stabilize.backends import postgres

        value = getattr(postgres, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
