"""What a task returns: a status plus context and outputs to merge."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stabilize._json import describe_unencodable
from stabilize.errors import InvalidTaskResultError
from stabilize.models.status import WorkflowStatus


@dataclass
class TaskResult:
    """The outcome of one task execution.

    ``context`` is merged into the stage's own context; ``outputs`` into the stage's
    outputs, which flow to every descendant stage. ``target_stage_ref_id`` is set by
    :meth:`jump_to`; ``error`` explains a failure. ``state``, when not ``None``, replaces
    the task's own durable state (``TaskExecution.state``, read as ``stage.task_state``);
    for a jump, it is the state the first task of the target stage starts with.
    ``signal_timeout`` is set by :meth:`suspend`.

    A result is checked when it is built: a bad one raises in the task that built it,
    which then fails on its own with the error, instead of reaching the database.

    Raises:
        InvalidTaskResultError: ``status`` is not a :class:`WorkflowStatus`, ``context``,
            ``outputs`` or ``state`` is not a dict, a value cannot be stored as JSON (the
            message names its key), ``target_stage_ref_id`` is not a string, or
            ``signal_timeout`` is not a number of seconds of at least 0 on a SUSPENDED
            result.
    """

    status: WorkflowStatus
    context: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    target_stage_ref_id: str | None = None
    error: str | None = None
    state: dict[str, Any] | None = None
    signal_timeout: float | None = None

    def __post_init__(self) -> None:
        error: object = self.error
        if error is not None and not isinstance(error, str):
            self.error = str(error)  # an exception passed as the error, say
        self.validate()

    def validate(self) -> None:
        """Check the result as the engine will store it (run again before it is used).

        Raises:
            InvalidTaskResultError: what is wrong, naming the field and key.
        """
        problem = result_problem(self)
        if problem is not None:
            raise InvalidTaskResultError(problem)

    @classmethod
    def success(
        cls,
        outputs: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        *,
        state: dict[str, Any] | None = None,
    ) -> TaskResult:
        """The task finished; the stage moves on to its next task.

        Args:
            outputs: Values visible to downstream stages (JSON values).
            context: Values merged into this stage's context (JSON values).
            state: The task's state to keep with it (``None``: as it is); see
                :meth:`running`.

        Returns:
            A SUCCEEDED result (the dicts are copied).

        Raises:
            InvalidTaskResultError: A value is not JSON, naming its key.
        """
        return cls(
            WorkflowStatus.SUCCEEDED, dict(context or {}), dict(outputs or {}), state=_copy(state)
        )

    @classmethod
    def running(
        cls, context: dict[str, Any] | None = None, *, state: dict[str, Any] | None = None
    ) -> TaskResult:
        """Not done yet: run the task again after its backoff period (polling).

        Args:
            context: Values merged into the stage's context before the next poll.
            state: The task's own state for its next execution, which reads it as
                ``stage.task_state`` (JSON values): it replaces the state, and is
                committed with this result, so a crash resumes from it. ``None`` keeps
                the state as it is. A reset of the stage (a jump back, a restart) empties
                it, except its ``"kept"`` entry.

        Returns:
            A RUNNING result.

        Raises:
            InvalidTaskResultError: A value is not JSON, naming its key.
        """
        return cls(WorkflowStatus.RUNNING, dict(context or {}), state=_copy(state))

    @classmethod
    def terminal(cls, error: str, context: dict[str, Any] | None = None) -> TaskResult:
        """The task failed and the workflow stops.

        Args:
            error: What went wrong, in words (stored on the stage).
            context: Values merged into the stage's context.

        Returns:
            A TERMINAL result.

        Raises:
            InvalidTaskResultError: A value is not JSON, naming its key.
        """
        return cls(WorkflowStatus.TERMINAL, dict(context or {}), error=error)

    failure = terminal

    @classmethod
    def failed_continue(
        cls,
        error: str,
        outputs: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> TaskResult:
        """The task failed but downstream stages still run.

        Args:
            error: What went wrong, in words (stored on the stage).
            outputs: Values visible to downstream stages.
            context: Values merged into the stage's context.

        Returns:
            A FAILED_CONTINUE result.

        Raises:
            InvalidTaskResultError: A value is not JSON, naming its key.
        """
        return cls(
            WorkflowStatus.FAILED_CONTINUE, dict(context or {}), dict(outputs or {}), error=error
        )

    @classmethod
    def skipped(cls) -> TaskResult:
        """The task did nothing and the stage ends SKIPPED.

        Returns:
            A SKIPPED result.
        """
        return cls(WorkflowStatus.SKIPPED)

    @classmethod
    def canceled(cls, outputs: dict[str, Any] | None = None) -> TaskResult:
        """The task gave up because it was canceled.

        Args:
            outputs: Values visible to downstream stages.

        Returns:
            A CANCELED result.

        Raises:
            InvalidTaskResultError: A value is not JSON, naming its key.
        """
        return cls(WorkflowStatus.CANCELED, outputs=dict(outputs or {}))

    @classmethod
    def stopped(cls, outputs: dict[str, Any] | None = None) -> TaskResult:
        """The task stopped the workflow on purpose.

        Args:
            outputs: Values visible to downstream stages.

        Returns:
            A STOPPED result.

        Raises:
            InvalidTaskResultError: A value is not JSON, naming its key.
        """
        return cls(WorkflowStatus.STOPPED, outputs=dict(outputs or {}))

    @classmethod
    def suspend(
        cls,
        context: dict[str, Any] | None = None,
        *,
        signal_timeout: float | None = None,
        state: dict[str, Any] | None = None,
    ) -> TaskResult:
        """Park the stage until a signal resumes it (the worker is freed meanwhile).

        The task runs again when a signal is delivered, with its name and data in the
        context (``_signal_name``, ``_signal_data``) and its sender in
        ``stage.signal_user``.

        Args:
            context: Values merged into the stage's context.
            signal_timeout: Seconds after which the signal ``timeout`` resumes the stage if
                no other signal came first (a durable timer; ``None``: wait forever).
            state: The task's state for when it runs again (see :meth:`running`).

        Returns:
            A SUSPENDED result.

        Raises:
            InvalidTaskResultError: A value is not JSON, naming its key, or
                ``signal_timeout`` is not a number of at least 0.
        """
        return cls(
            WorkflowStatus.SUSPENDED,
            dict(context or {}),
            state=_copy(state),
            signal_timeout=signal_timeout,
        )

    @classmethod
    def redirect(cls, context: dict[str, Any] | None = None) -> TaskResult:
        """Restart the current stage's tasks from the first one.

        Args:
            context: Values merged into the stage's context first.

        Returns:
            A REDIRECT result without a target.

        Raises:
            InvalidTaskResultError: A value is not JSON, naming its key.
        """
        return cls(WorkflowStatus.REDIRECT, dict(context or {}))

    @classmethod
    def jump_to(
        cls,
        target_stage_ref_id: str,
        context: dict[str, Any] | None = None,
        outputs: dict[str, Any] | None = None,
        *,
        state: dict[str, Any] | None = None,
    ) -> TaskResult:
        """Jump to another stage.

        Backward (to this stage or an ancestor): the target and the stages between are
        reset and run again; ``context`` and ``outputs`` are merged into the target's
        context. Forward (to a descendant): the stages between are skipped, this stage
        completes with ``outputs`` and ``context`` is merged into the target's context.

        Args:
            target_stage_ref_id: The ``ref_id`` of the stage to jump to.
            context: Values merged into the target's context.
            outputs: Backward: merged into the target's context; forward: this stage's
                outputs.
            state: The state the first task of the target starts with (its
                ``stage.task_state``), replacing what a reset left of it.

        Returns:
            A REDIRECT result naming the target (the engine checks the target exists and
            counts the jump against the workflow's bound).

        Raises:
            InvalidTaskResultError: A value is not JSON, naming its key, or the target is
                not a string.
        """
        return cls(
            WorkflowStatus.REDIRECT,
            dict(context or {}),
            dict(outputs or {}),
            target_stage_ref_id=target_stage_ref_id,
            state=_copy(state),
        )

    @classmethod
    def builder(cls, status: WorkflowStatus) -> TaskResultBuilder:
        """Start building a result with this status.

        Args:
            status: The result's status.

        Returns:
            A :class:`TaskResultBuilder`; its ``build()`` makes the result.
        """
        return TaskResultBuilder(status)

    def merge_outputs(self, outputs: dict[str, Any]) -> TaskResult:
        """Return a copy with ``outputs`` merged into this result's outputs.

        Args:
            outputs: Values that win over this result's outputs of the same name.

        Returns:
            A new result; this one is unchanged.

        Raises:
            InvalidTaskResultError: A value is not JSON, naming its key.
        """
        return TaskResult(
            self.status,
            dict(self.context),
            {**self.outputs, **outputs},
            self.target_stage_ref_id,
            self.error,
            _copy(self.state),
            self.signal_timeout,
        )


class TaskResultBuilder:
    """Fluent construction of a :class:`TaskResult`."""

    def __init__(self, status: WorkflowStatus) -> None:
        self._result = TaskResult(status)

    def context(self, context: dict[str, Any]) -> TaskResultBuilder:
        """Replace the context to merge."""
        self._result.context = dict(context)
        return self

    def outputs(self, outputs: dict[str, Any]) -> TaskResultBuilder:
        """Replace the outputs to merge."""
        self._result.outputs = dict(outputs)
        return self

    def add_context(self, key: str, value: Any) -> TaskResultBuilder:
        """Add one context key."""
        self._result.context[key] = value
        return self

    def add_output(self, key: str, value: Any) -> TaskResultBuilder:
        """Add one output key."""
        self._result.outputs[key] = value
        return self

    def state(self, state: dict[str, Any]) -> TaskResultBuilder:
        """Replace the task's state (see :meth:`TaskResult.running`)."""
        self._result.state = dict(state)
        return self

    def build(self) -> TaskResult:
        """Return the result.

        Raises:
            InvalidTaskResultError: what was added cannot be stored (the key is named).
        """
        self._result.validate()
        return self._result


def result_problem(result: object) -> str | None:
    """Say what makes ``result`` unusable as a task's result, or None if it is fine."""
    if not isinstance(result, TaskResult):
        return f"a task must return a TaskResult, not {type(result).__name__}"
    status: object = result.status
    if not isinstance(status, WorkflowStatus):
        hint = ""
        if isinstance(status, str) and status.upper() in WorkflowStatus.__members__:
            hint = f" (write WorkflowStatus.{status.upper()}, or use TaskResult.success() etc.)"
        return (
            f"TaskResult.status must be a WorkflowStatus, not the {type(status).__name__} "
            f"{status!r}{hint}"
        )
    for name in ("context", "outputs"):
        value = getattr(result, name)
        if not isinstance(value, Mapping):
            return (
                f"TaskResult.{name} must be a dict of names to JSON values, not a "
                f"{type(value).__name__}"
            )
        if not value:
            continue
        problem = describe_unencodable(dict(value), f"TaskResult.{name}")
        if problem is not None:
            return problem
    state: object = result.state
    if state is not None:
        if not isinstance(state, Mapping):
            return (
                "TaskResult.state must be a dict of names to JSON values (or None), not a "
                f"{type(state).__name__}"
            )
        problem = describe_unencodable(dict(state), "TaskResult.state")
        if problem is not None:
            return problem
    target: object = result.target_stage_ref_id
    if target is not None and not isinstance(target, str):
        return f"TaskResult.target_stage_ref_id must be a stage's ref_id (a string), not {target!r}"
    return _timeout_problem(result.signal_timeout, status)


def _timeout_problem(timeout: object, status: WorkflowStatus) -> str | None:
    if timeout is None:
        return None
    if status is not WorkflowStatus.SUSPENDED:
        return f"TaskResult.signal_timeout applies to a SUSPENDED result, not {status.value}"
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 <= timeout < float("inf")
    ):
        return (
            "TaskResult.signal_timeout must be a number of seconds of at least 0 (or None), "
            f"not {timeout!r}"
        )
    return None


def _copy(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)
