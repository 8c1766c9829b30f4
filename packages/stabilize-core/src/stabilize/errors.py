"""The exceptions stabilize raises and the ones tasks raise to steer retries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StabilizeError(Exception):
    """Base class of every stabilize exception."""


class WorkflowValidationError(StabilizeError, ValueError):
    """A workflow was refused before anything was stored.

    Attributes:
        ref_id: The ``ref_id`` of the offending stage, when one is to blame.
    """

    def __init__(self, message: str, *, ref_id: str | None = None) -> None:
        super().__init__(message)
        self.ref_id = ref_id


class InvalidStageGraphError(WorkflowValidationError):
    """The stage graph is malformed (duplicate, unknown or self-referencing ``ref_id``).

    Attributes:
        kind: ``duplicate_ref``, ``self_edge``, ``unknown_ref``, ``missing_ref`` or ``cycle``.
    """

    def __init__(self, message: str, *, kind: str, ref_id: str | None = None) -> None:
        super().__init__(message, ref_id=ref_id)
        self.kind = kind


class CircularDependencyError(InvalidStageGraphError):
    """The requisites of the stages form a cycle.

    Attributes:
        cycle: The ``ref_id`` values along the cycle, first one repeated at the end.
    """

    def __init__(self, cycle: list[str]) -> None:
        super().__init__(
            "circular dependency between stages: " + " -> ".join(cycle),
            kind="cycle",
            ref_id=cycle[0],
        )
        self.cycle = cycle


class UnknownTaskTypeError(WorkflowValidationError):
    """A task names an ``implementing_class`` that no registry knows."""


class ContextSerializationError(WorkflowValidationError):
    """A context or output value cannot be stored as JSON."""


class InvalidTaskResultError(StabilizeError, ValueError):
    """A task returned (or built) a result the engine cannot store.

    The message names the field and key at fault; the task fails TERMINAL with it, and
    nothing else on the worker is held back.
    """


class SignalError(StabilizeError, ValueError):
    """A signal could not be delivered: no such stage, or it no longer takes signals."""


class TaskError(StabilizeError):
    """Base class of the errors a task raises to tell the engine how to proceed.

    Args:
        message: What went wrong.
        code: An optional numeric code.
        cause: The underlying exception, if any.
        error_code: An optional symbolic code.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        cause: BaseException | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.cause = cause
        self.error_code = error_code


class TransientError(TaskError):
    """A failure worth retrying: the task runs again after a backoff.

    Args:
        message: What went wrong.
        retry_after: Seconds to wait before the next attempt (overrides the backoff).
        context_update: Keys merged into the stage context before the next attempt, so
            that a task can keep its progress across retries.
        state: The task's own state for the next attempt (``stage.task_state``; see
            ``TaskResult.running``): it replaces the state; ``None`` keeps it as it is.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        cause: BaseException | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
        context_update: Mapping[str, Any] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, cause=cause, error_code=error_code)
        if retry_after is not None and retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {retry_after!r}")
        self.retry_after = retry_after
        self.context_update = dict(context_update or {})
        self.state = None if state is None else dict(state)


class PermanentError(TaskError):
    """A failure that retrying cannot fix: the task ends TERMINAL at once."""


class TaskTimeoutError(TaskError):
    """A task ran longer than its timeout."""


class TaskNotFoundError(StabilizeError, KeyError):
    """No task is registered under the requested name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not found"


class LeaseLostError(StabilizeError):
    """A worker tried to commit work whose lease another worker has taken over."""


class SchemaVersionError(StabilizeError):
    """The database schema is newer than this version of stabilize understands."""


class DatabaseNotFoundError(SchemaVersionError):
    """An open-only path found no stabilize database: no such file, schema or tables.

    A :class:`SchemaVersionError` (at version 0) so that code catching that still does.
    """


class DatabaseUrlError(StabilizeError, ValueError):
    """A ``--db-url`` that names no database stabilize can use (a usage error)."""


class EventStoreError(StabilizeError):
    """The event log cannot answer a query (for example, it has no ``workflows`` table)."""


def is_transient(error: BaseException) -> bool:
    """Return True when ``error`` should be retried.

    Besides :class:`TransientError`, the stdlib's timeout and connection errors count.

    Args:
        error: The exception to classify.

    Returns:
        False for a :class:`PermanentError` (it wins over everything), True for a
        :class:`TransientError`, `TimeoutError` or `ConnectionError`, else False.
    """
    if isinstance(error, PermanentError):
        return False
    return isinstance(error, TransientError | TimeoutError | ConnectionError)


def is_permanent(error: BaseException) -> bool:
    """Return True when ``error`` must not be retried.

    Args:
        error: The exception to classify.

    Returns:
        The opposite of `is_transient`: anything not known to be transient is permanent.
    """
    return not is_transient(error)
