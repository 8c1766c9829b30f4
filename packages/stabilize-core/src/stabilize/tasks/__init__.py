"""Tasks: the interface user code implements, results, and the registry.

Also what a task type defined outside core (an extension's, or your own) uses to read its
configuration: :class:`ContextReader`, the :class:`TaskConfigError` it raises, and
:func:`mask_secrets` for the texts it reports.
"""

from __future__ import annotations

from stabilize.tasks._context import ContextReader, TaskConfigError, mask_secrets
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
    "ContextReader",
    "NoOpTask",
    "RetryableTask",
    "SkippableTask",
    "Task",
    "TaskConfigError",
    "TaskRegistry",
    "TaskResult",
    "TaskResultBuilder",
    "WaitTask",
    "mask_secrets",
]
