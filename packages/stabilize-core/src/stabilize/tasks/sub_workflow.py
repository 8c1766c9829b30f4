"""Run a child workflow as one stage of its parent, and wait for it."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.models.workflow import Workflow
from stabilize.orchestrator import submit_workflow
from stabilize.tasks._database import task_backend
from stabilize.tasks.interface import RetryableTask
from stabilize.tasks.result import TaskResult

DEFAULT_MAX_RECURSION_DEPTH = 10

log = logging.getLogger(__name__)


def sub_workflow_config(
    name: str,
    stages: Sequence[StageExecution],
    application: str | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe a child workflow for a stage's ``_sub_workflow_config`` context key.

    Args:
        name: The child's name.
        stages: Its stages (they are copied; each child run gets fresh ids).
        application: Its application (default: the parent's).
        context: Its workflow context.
    """
    Workflow.create(
        application or "sub", name, [StageExecution.from_dict(s.to_dict()) for s in stages]
    )
    return {
        "name": name,
        "application": application,
        "stages": [s.to_dict() for s in stages],
        "context": dict(context or {}),
    }


class SubWorkflowTask(RetryableTask):
    """Starts the child workflow described by ``_sub_workflow_config`` and waits for it.

    The child runs on the same database as the parent, through the same queue, so any
    worker process may run its stages; no orchestrator singleton is involved. The child's
    id is derived from the parent workflow, stage, task and run (not the retry), so a
    parent task run again after a crash or a database error finds the child it already
    started instead of starting another, and a stage run again (a jump back, a restart)
    starts a new one. A transient database error while starting or checking the child
    (as the backend's ``is_transient_error`` says) is retried at the next poll; the
    task's timeout bounds how long.

    Context keys: ``_sub_workflow_config`` (required; see :func:`sub_workflow_config`;
    its ``stages`` may also be ``StageExecution`` objects, as when a subclass builds the
    child inside ``execute`` before calling ``super().execute(stage)``),
    ``_max_recursion_depth`` (10), ``_sub_workflow_poll_seconds`` (0.5),
    ``_sub_workflow_timeout_seconds`` (1800). Outputs: ``sub_workflow_id``,
    ``sub_workflow_status`` and ``sub_workflow_outputs`` (the child's stage outputs
    merged). A failed child fails the stage; a canceled child cancels it; canceling the
    parent (or this stage) cancels the child.
    """

    def get_timeout(self) -> timedelta:
        """Thirty minutes unless ``_sub_workflow_timeout_seconds`` says otherwise."""
        return timedelta(minutes=30)

    def get_dynamic_timeout(self, stage: StageExecution) -> timedelta:
        """``_sub_workflow_timeout_seconds`` from the context, or :meth:`get_timeout`.

        Args:
            stage: The stage whose context may set the timeout.

        Returns:
            How long the child may run before the task fails.

        Raises:
            ValueError: ``_sub_workflow_timeout_seconds`` is not a number.
        """
        seconds = stage.context.get("_sub_workflow_timeout_seconds")
        return timedelta(seconds=float(seconds)) if seconds is not None else self.get_timeout()

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        """How often the child is checked (``_sub_workflow_poll_seconds``, default 0.5 s).

        Args:
            stage: The stage whose context may set the interval.
            duration: How long the task has run so far (unused).

        Returns:
            The time to wait before the next check.

        Raises:
            ValueError: ``_sub_workflow_poll_seconds`` is not a number.
        """
        return timedelta(seconds=float(stage.context.get("_sub_workflow_poll_seconds", 0.5)))

    def execute(self, stage: StageExecution) -> TaskResult:
        """Start the child on the first run; afterwards report on it.

        Args:
            stage: The stage; its context holds ``_sub_workflow_config`` (name, application,
                stages, context) and, once started, ``_sub_workflow_id``.

        Returns:
            ``running()`` while the child runs (and after a transient database error);
            success with ``sub_workflow_id``, ``sub_workflow_status`` and
            ``sub_workflow_outputs`` when it succeeded; TERMINAL when it failed, the
            configuration is invalid or the recursion limit is reached.
        """
        backend = task_backend()
        if backend is None:
            return TaskResult.terminal("SubWorkflowTask must run inside a QueueProcessor")
        child_id = stage.context.get("_sub_workflow_id")
        if not isinstance(child_id, str):
            config = stage.context.get("_sub_workflow_config")
            if not isinstance(config, dict) or not config.get("stages"):
                return TaskResult.terminal(
                    f"stage {stage.ref_id!r}: _sub_workflow_config with 'name' and 'stages' "
                    "is required (see stabilize.tasks.sub_workflow.sub_workflow_config)"
                )
            parent = stage.execution
            depth = int(parent.context.get("_recursion_depth", 0)) + 1
            limit = int(stage.context.get("_max_recursion_depth", DEFAULT_MAX_RECURSION_DEPTH))
            if depth > limit:
                return TaskResult.terminal(
                    f"stage {stage.ref_id!r}: sub-workflow nesting depth {depth} exceeds "
                    f"_max_recursion_depth={limit}"
                )
            # A config built inside execute may hold StageExecution objects (issue 14):
            # the stored context keeps their dict form.
            config = _as_stored(config)
            stage.context["_sub_workflow_config"] = config
            child = _build_child(stage, config, depth)
            clock = stage._clock or time.time
            try:
                submit_workflow(backend, child, int(clock() * 1000))
            except Exception as exc:
                if not backend.is_transient_error(exc):
                    raise
                # The child may have been stored all the same (an error at the commit):
                # the next poll submits the same id again, which finds it.
                return _poll_again(stage, f"starting sub-workflow {child.id}", exc)
            return TaskResult.running(
                context={"_sub_workflow_id": child.id, "_sub_workflow_config": config}
            )
        try:
            with backend.read() as tx:
                child_wf = tx.read_workflow(child_id)
        except Exception as exc:
            if not backend.is_transient_error(exc):
                raise
            return _poll_again(stage, f"reading sub-workflow {child_id}", exc)
        if child_wf is None:
            return TaskResult.terminal(f"sub-workflow {child_id} has disappeared")
        status = child_wf.status
        if not status.is_complete:
            return TaskResult.running()
        outputs = {
            "sub_workflow_id": child_id,
            "sub_workflow_status": status.value,
            "sub_workflow_outputs": child_wf.get_context(),
        }
        if status.is_successful:
            return TaskResult.success(outputs=outputs)
        if status is WorkflowStatus.CANCELED:
            return TaskResult.canceled(outputs=outputs)
        error = f"sub-workflow {child_id} ended {status.value}: {child_wf.error or 'no detail'}"
        return TaskResult(WorkflowStatus.TERMINAL, outputs=outputs, error=error)


def _poll_again(stage: StageExecution, doing: str, exc: Exception) -> TaskResult:
    """RUNNING after a transient database error: the next poll tries again.

    Not a ``TransientError``: polls of a long child would add up to the retry budget
    (``transient_max_attempts``) and fail the parent on a busy database.
    """
    log.warning(
        "stage %r: transient database error %s, retrying at the next poll: %s: %s",
        stage.ref_id,
        doing,
        type(exc).__name__,
        exc,
    )
    return TaskResult.running()


def _as_stored(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each stage (and task) in the dict form the stage context stores."""
    stored = dict(config)
    stored["stages"] = [
        s.to_dict() if isinstance(s, StageExecution) else s for s in config["stages"]
    ]
    return stored


def _build_child(stage: StageExecution, config: dict[str, Any], depth: int) -> Workflow:
    parent = stage.execution
    seed = _run_seed(stage)
    stages = []
    for i, data in enumerate(config["stages"]):
        copy = dict(data)
        copy["id"] = _derived_id(seed, f"stage{i}")
        copy["tasks"] = [
            {**t, "id": _derived_id(seed, f"stage{i}task{j}")}
            for j, t in enumerate(data.get("tasks") or [])
        ]
        stages.append(StageExecution.from_dict(copy))
    for s in stages:
        s.reset()
        for t in s.tasks:
            t.version = 0
    child = Workflow.create(
        application=str(config.get("application") or parent.application),
        name=str(config.get("name") or f"{parent.name} / {stage.ref_id}"),
        stages=stages,
        context={
            **dict(config.get("context") or {}),
            "_recursion_depth": depth,
            "_parent_workflow_id": parent.id,
            "_parent_stage_id": stage.id,
        },
    )
    child.id = _derived_id(seed, "workflow")
    return child


def _run_seed(stage: StageExecution) -> str:
    """What names this run of the stage's task: ``workflow:stage:task:run<version>``.

    Unlike the idempotency key it leaves out the retry count: an attempt retried after a
    ``TransientError`` (raised by a subclass after the submit) finds the same child.
    """
    running = [t for t in stage.tasks if t.status is WorkflowStatus.RUNNING]
    if len(running) != 1:
        return stage.idempotency_key
    task = running[0]
    return f"{stage.execution.id}:{stage.id}:{task.id}:run{task.version}"


def _derived_id(seed: str, what: str) -> str:
    """A stable id for a child entity: the same seed always gives the same id."""
    digest = hashlib.sha256(f"{seed}/{what}".encode()).hexdigest()[:24]
    return f"sub{digest}"
