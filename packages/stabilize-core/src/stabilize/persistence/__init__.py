"""Workflow stores: durable state of workflows, stages and tasks."""

from __future__ import annotations

from stabilize.persistence.store import SqliteWorkflowStore, WorkflowNotFoundError, WorkflowStore

__all__ = ["SqliteWorkflowStore", "WorkflowNotFoundError", "WorkflowStore"]
