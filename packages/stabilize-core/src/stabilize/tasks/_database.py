"""The database of the worker running a task, for tasks that start workflows themselves.

The queue processor binds its backend around each execution of a task (and its hooks);
:class:`~stabilize.tasks.sub_workflow.SubWorkflowTask` reads it here. The models know
nothing of storage (issue 18): the stage a task receives does not carry the backend.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stabilize.backends._base import Backend

_backend: ContextVar[Backend | None] = ContextVar("stabilize_task_backend", default=None)


def task_backend() -> Backend | None:
    """The backend of the worker running the current task, or ``None`` outside one."""
    return _backend.get()


@contextlib.contextmanager
def running_on(backend: Backend | None) -> Iterator[None]:
    """Make ``backend`` the one :func:`task_backend` returns within the block.

    Args:
        backend: The worker's backend (``None`` binds nothing new).
    """
    token = _backend.set(backend)
    try:
        yield
    finally:
        _backend.reset(token)
