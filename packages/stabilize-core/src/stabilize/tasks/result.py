"""What a task returns: a status plus context and outputs to merge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stabilize.models.status import WorkflowStatus


@dataclass
class TaskResult:
    """The outcome of one task execution.

    ``context`` is merged into the stage's own context; ``outputs`` into the stage's
    outputs, which flow to every descendant stage. ``target_stage_ref_id`` is set by
    :meth:`jump_to`; ``error`` explains a failure.
    """

    status: WorkflowStatus
    context: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    target_stage_ref_id: str | None = None
    error: str | None = None

    @classmethod
    def success(
        cls, outputs: dict[str, Any] | None = None, context: dict[str, Any] | None = None
    ) -> TaskResult:
        """The task finished; the stage moves on to its next task."""
        return cls(WorkflowStatus.SUCCEEDED, dict(context or {}), dict(outputs or {}))

    @classmethod
    def running(cls, context: dict[str, Any] | None = None) -> TaskResult:
        """Not done yet: run the task again after its backoff period (polling)."""
        return cls(WorkflowStatus.RUNNING, dict(context or {}))

    @classmethod
    def terminal(cls, error: str, context: dict[str, Any] | None = None) -> TaskResult:
        """The task failed and the workflow stops."""
        return cls(WorkflowStatus.TERMINAL, dict(context or {}), error=error)

    failure = terminal

    @classmethod
    def failed_continue(
        cls,
        error: str,
        outputs: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> TaskResult:
        """The task failed but downstream stages still run."""
        return cls(
            WorkflowStatus.FAILED_CONTINUE, dict(context or {}), dict(outputs or {}), error=error
        )

    @classmethod
    def skipped(cls) -> TaskResult:
        """The task did nothing and the stage ends SKIPPED."""
        return cls(WorkflowStatus.SKIPPED)

    @classmethod
    def canceled(cls, outputs: dict[str, Any] | None = None) -> TaskResult:
        """The task gave up because it was canceled."""
        return cls(WorkflowStatus.CANCELED, outputs=dict(outputs or {}))

    @classmethod
    def stopped(cls, outputs: dict[str, Any] | None = None) -> TaskResult:
        """The task stopped the workflow on purpose."""
        return cls(WorkflowStatus.STOPPED, outputs=dict(outputs or {}))

    @classmethod
    def suspend(cls, context: dict[str, Any] | None = None) -> TaskResult:
        """Park the stage until a signal resumes it (the worker is freed meanwhile)."""
        return cls(WorkflowStatus.SUSPENDED, dict(context or {}))

    @classmethod
    def redirect(cls, context: dict[str, Any] | None = None) -> TaskResult:
        """Restart the current stage's tasks from the first one."""
        return cls(WorkflowStatus.REDIRECT, dict(context or {}))

    @classmethod
    def jump_to(
        cls,
        target_stage_ref_id: str,
        context: dict[str, Any] | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> TaskResult:
        """Jump to another stage.

        Backward (to this stage or an ancestor): the target and the stages between are
        reset and run again; ``context`` and ``outputs`` are merged into the target's
        context. Forward (to a descendant): the stages between are skipped, this stage
        completes with ``outputs`` and ``context`` is merged into the target's context.
        """
        return cls(
            WorkflowStatus.REDIRECT,
            dict(context or {}),
            dict(outputs or {}),
            target_stage_ref_id=target_stage_ref_id,
        )

    @classmethod
    def builder(cls, status: WorkflowStatus) -> TaskResultBuilder:
        """Start building a result with this status."""
        return TaskResultBuilder(status)

    def merge_outputs(self, outputs: dict[str, Any]) -> TaskResult:
        """Return a copy with ``outputs`` merged into this result's outputs."""
        return TaskResult(
            self.status,
            dict(self.context),
            {**self.outputs, **outputs},
            self.target_stage_ref_id,
            self.error,
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

    def build(self) -> TaskResult:
        """Return the result."""
        return self._result
