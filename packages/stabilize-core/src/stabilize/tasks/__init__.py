"""Tasks: the interface user code implements, results, and the registry."""

from __future__ import annotations

from stabilize.tasks.interface import CallableTask, NoOpTask, RetryableTask, Task, WaitTask
from stabilize.tasks.registry import TaskRegistry
from stabilize.tasks.result import TaskResult, TaskResultBuilder

__all__ = [
    "CallableTask",
    "NoOpTask",
    "RetryableTask",
    "Task",
    "TaskRegistry",
    "TaskResult",
    "TaskResultBuilder",
    "WaitTask",
]
