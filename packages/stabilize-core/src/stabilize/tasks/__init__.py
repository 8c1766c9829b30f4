"""Tasks: the interface user code implements, results, and the registry."""

from __future__ import annotations

from stabilize.tasks.interface import (
    CallableTask,
    NoOpTask,
    RetryableTask,
    SkippableTask,
    Task,
    WaitTask,
)
from stabilize.tasks.registry import TaskRegistry
from stabilize.tasks.result import TaskResult, TaskResultBuilder

__all__ = [
    "CallableTask",
    "NoOpTask",
    "RetryableTask",
    "SkippableTask",
    "Task",
    "TaskRegistry",
    "TaskResult",
    "TaskResultBuilder",
    "WaitTask",
]
