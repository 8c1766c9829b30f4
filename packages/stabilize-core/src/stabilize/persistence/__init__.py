"""Workflow stores: durable state of workflows, stages and tasks."""

from __future__ import annotations

from stabilize.backends.postgres import PoolOptions
from stabilize.persistence.store import (
    PostgresWorkflowStore,
    SqliteWorkflowStore,
    WorkflowNotFoundError,
    WorkflowStore,
)

__all__ = [
    "PoolOptions",
    "PostgresWorkflowStore",
    "SqliteWorkflowStore",
    "WorkflowNotFoundError",
    "WorkflowStore",
]
