"""The state machine: pure transitions from (workflow, message) to effects.

Every function here takes the in-memory workflow, changes it in place and returns the
:class:`~stabilize.engine.messages.Effects` the processor must commit in one transaction:
the rows to write, the messages to enqueue and the events to record. Nothing here reads a
clock, draws an id or touches a database: ``now`` (epoch milliseconds) and the task's
outcome are passed in, so the same inputs always give the same result and replay is exact.
If the commit fails, the processor throws the in-memory workflow away and reloads it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ParamSpec

from stabilize.engine.messages import (
    ACQUIRE_MUTEX,
    CANCEL_WORKFLOW,
    RELEASE_MUTEX,
    RUN_TASK,
    SIGNAL_TIMEOUT,
    STAGE_DEADLINE,
    Effects,
    Message,
)
from stabilize.errors import SignalError
from stabilize.expressions import ExpressionError, is_true
from stabilize.models.stage import JoinType, StageExecution, StragglerPolicy
from stabilize.models.status import WorkflowStatus
from stabilize.models.task import TaskExecution
from stabilize.models.workflow import Workflow
from stabilize.reducers import apply_output_reducers

S = WorkflowStatus


@dataclass(frozen=True)
class TaskOutcome:
    """How one execution of a task went, as the processor observed it.

    Attributes:
        status: The :class:`TaskResult` status (``RUNNING`` to poll again).
        context: Keys to merge into the stage context.
        outputs: Keys to merge into the stage outputs.
        target_stage_ref_id: The stage to jump to, for ``REDIRECT``.
        error: A one-line explanation of a failure.
        error_details: Structured details of the failure (exception type, traceback).
        delay_ms: For ``RUNNING``: when to run the task again.
        retry: The task raised a transient error and runs again after ``delay_ms``.
    """

    status: WorkflowStatus
    context: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    target_stage_ref_id: str | None = None
    error: str | None = None
    error_details: dict[str, Any] | None = None
    delay_ms: int = 0
    retry: bool = False


SIGNAL_TIMEOUT_KEY = "_signal_timeout_seconds"
"""Context key a suspending task sets (in its result's context) to be resumed with the
signal ``timeout`` after that many seconds if no other signal came first."""

_ACTIVE_STAGE = frozenset({S.RUNNING, S.SUSPENDED, S.PAUSED, S.BUFFERED})

P = ParamSpec("P")


def _transition(fn: Callable[P, Effects]) -> Callable[P, Effects]:
    """Finish a public transition: complete the workflow, release mutexes.

    The workflow completes if nothing is left to do, and the mutexes stages gave up become
    ReleaseMutex messages. The completion check waits until the whole transition has run:
    a cascade of skipped stages may empty the set of active stages while a sibling is
    still about to start.
    """
    position = list(inspect.signature(fn).parameters).index("now")

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Effects:
        fx = fn(*args, **kwargs)
        wf = args[0]
        assert isinstance(wf, Workflow)
        index = wf.index
        if index.milestone_waiting and not wf.status.is_complete:
            now = kwargs["now"] if "now" in kwargs else args[position]
            assert isinstance(now, int)
            for ref in sorted(index.milestone_waiting, key=index.topo_position.__getitem__):
                waiting = index.by_ref[ref]
                if waiting.status is S.NOT_STARTED:
                    _start_stage(wf, waiting, now, fx)
                else:
                    index.milestone_waiting.discard(ref)
        at, index.completion_at = index.completion_at, None
        if at is not None and wf.status is S.RUNNING and not index.active:
            wf.status = S.SUCCEEDED
            wf.end_time = at
            fx.workflow_changed = True
            fx.emit("workflow.completed", "workflow", wf.id, status=S.SUCCEEDED.value)
        for key, stage_id in index.mutex_released:
            fx.messages.append(Message(RELEASE_MUTEX, wf.id, stage_id, payload={"key": key}))
        index.mutex_released.clear()
        return fx

    return wrapper


def mark_stage(wf: Workflow, stage: StageExecution, status: WorkflowStatus) -> None:
    """Set a stage's status, keeping the index's join and completion counters in step."""
    index = wf.index
    was_complete = stage.status.is_complete
    stage.status = status
    if status.is_complete != was_complete:
        delta = -1 if status.is_complete else 1
        for child in index.downstream[stage.ref_id]:
            index.pending_upstream[child.ref_id] += delta
    if status in _ACTIVE_STAGE:
        index.active.add(stage.id)
    else:
        index.active.discard(stage.id)
        if stage.mutex_held and stage.mutex_key is not None:
            stage.mutex_held = False
            index.mutex_released.append((stage.mutex_key, stage.id))


@_transition
def start_workflow(wf: Workflow, now: int) -> Effects:
    """Start a NOT_STARTED workflow: every stage without requisites starts."""
    fx = Effects()
    if wf.status is not S.NOT_STARTED:
        fx.stale = True
        return fx
    wf.status = S.RUNNING
    wf.start_time = now
    fx.workflow_changed = True
    fx.emit("workflow.started", "workflow", wf.id)
    for stage in wf.initial_stages():
        if stage.status is S.NOT_STARTED:
            _start_stage(wf, stage, now, fx)
    _maybe_complete_workflow(wf, now, fx)
    return fx


def prepare_task(
    wf: Workflow, stage_id: str, task_id: str, now: int, run: int | None = None
) -> Effects | None:
    """Decide whether a claimed RunTask may run its user code.

    Returns ``None`` when it may. Otherwise returns the effects to commit instead: the
    message is stale (the workflow ended, the task is no longer running, or ``run`` names
    an older run of it), or the workflow is paused and the task is parked until
    :func:`resume_workflow`.
    """
    stage = wf.index.by_id.get(stage_id)
    task = _find_task(stage, task_id)
    if stage is None or task is None or task.status is not S.RUNNING:
        return Effects(stale=True)
    if run is not None and task.version != run:
        return Effects(stale=True)
    if wf.status is S.PAUSED:
        fx = Effects()
        task.status = S.PAUSED
        fx.touch(stage)
        fx.emit("task.paused", "task", task.id, stage_id=stage.id)
        return fx
    if wf.status is not S.RUNNING or stage.status is not S.RUNNING:
        return Effects(stale=True)
    return None


@_transition
def complete_task(
    wf: Workflow,
    stage_id: str,
    task_id: str,
    outcome: TaskOutcome,
    now: int,
    run: int | None = None,
) -> Effects:
    """Apply the outcome of a task execution and everything that follows from it.

    Folds in every transition that needs no user code: the next task of the stage, the
    stage's completion, the start of downstream stages and their first tasks, jumps, and
    the workflow's completion.
    """
    fx = Effects()
    stage = wf.index.by_id.get(stage_id)
    task = _find_task(stage, task_id)
    if (
        stage is None
        or task is None
        or task.status is not S.RUNNING
        or stage.status is not S.RUNNING
        or wf.status not in (S.RUNNING, S.PAUSED)
        or (run is not None and task.version != run)
    ):
        fx.stale = True
        return fx
    fx.touch(stage)
    status = outcome.status
    if outcome.retry or status is S.RUNNING:
        stage.context.update(outcome.context)
        if outcome.retry:
            task.retry_count += 1
            task.task_exception_details = dict(outcome.error_details or {})
            fx.emit(
                "task.retried",
                "task",
                task.id,
                stage_id=stage.id,
                attempt=task.retry_count,
                error=outcome.error,
                delay_ms=outcome.delay_ms,
                context=outcome.context,
            )
        elif outcome.context:
            fx.emit("context.updated", "stage", stage.id, context=outcome.context)
        fx.messages.append(_run_task(wf, stage, task, outcome.delay_ms))
        return fx
    if status is S.REDIRECT:
        _redirect(wf, stage, task, outcome, now, fx)
        return fx
    stage.context.update(outcome.context)
    stage.outputs.update(outcome.outputs)
    task.status = status
    task.end_time = now
    if outcome.error_details is not None or outcome.error is not None:
        task.task_exception_details = dict(outcome.error_details or {"message": outcome.error})
    fx.emit(
        "task.completed" if status.is_successful else _task_event(status),
        "task",
        task.id,
        stage_id=stage.id,
        status=status.value,
        context=outcome.context,
        outputs=outcome.outputs,
        error=outcome.error,
    )
    if status is S.SUSPENDED:
        mark_stage(wf, stage, S.SUSPENDED)
        wait = outcome.context.get(SIGNAL_TIMEOUT_KEY)
        fx.emit("stage.suspended", "stage", stage.id, timeout_seconds=wait)
        if stage.pending_signals:
            _deliver_signal(wf, stage, stage.pending_signals.pop(0), now, fx)
        elif isinstance(wait, int | float) and not isinstance(wait, bool) and wait >= 0:
            # A durable timer: if no signal comes first, a "timeout" signal resumes it.
            fx.messages.append(
                Message(
                    SIGNAL_TIMEOUT,
                    wf.id,
                    stage.id,
                    task.id,
                    {"run": task.version},
                    delay_ms=int(wait * 1000),
                )
            )
        return fx
    if stage.deferred_choice_group is not None:
        _choose(wf, stage, now, fx)
    if status is S.SUCCEEDED:
        following = _next_task(stage, task)
        if following is not None:
            _start_task(wf, stage, following, now, fx)
            return fx
    _complete_stage(wf, stage, status, now, fx, error=outcome.error)
    return fx


@_transition
def cancel_stages(
    wf: Workflow, refs: Iterable[str], user: str | None, reason: str | None, now: int
) -> Effects:
    """Cancel single stages (or a region): the rest of the workflow carries on.

    Each named stage that has not finished ends CANCELED (running tasks get the
    cooperative cancel). Downstream, a canceled stage counts like a branch not taken: a
    join with other live requisites still runs, a stage with none is skipped.
    """
    fx = Effects()
    if wf.status.is_complete:
        fx.stale = True
        return fx
    index = wf.index
    targets = [index.by_ref[r] for r in refs if r in index.by_ref]
    targets = [s for s in targets if not s.status.is_complete]
    for stage in sorted(targets, key=lambda s: index.topo_position[s.ref_id]):
        _cancel_stage(wf, stage, "canceled", now, fx, user=user, note=reason)
    for stage in targets:
        _propagate(wf, stage, now, fx)
    _maybe_complete_workflow(wf, now, fx)
    return fx


@_transition
def mutex_granted(wf: Workflow, stage_id: str, now: int) -> Effects:
    """A stage waiting for its ``mutex_key`` got it: it starts now.

    If the stage no longer waits (its workflow was canceled meanwhile), the mutex is given
    back at once.
    """
    fx = Effects()
    stage = wf.index.by_id.get(stage_id)
    if stage is None or stage.status is not S.BUFFERED or wf.status.is_complete:
        key = stage.mutex_key if stage is not None else None
        if key is not None:
            fx.messages.append(Message(RELEASE_MUTEX, wf.id, stage_id, payload={"key": key}))
        fx.stale = True
        return fx
    stage.mutex_held = True
    _start_stage(wf, stage, now, fx)
    return fx


@_transition
def signal_stage(
    wf: Workflow,
    stage_id: str,
    name: str,
    data: dict[str, Any] | None,
    now: int,
    *,
    persistent: bool = True,
    user: str | None = None,
) -> Effects:
    """Deliver a named signal to a stage (the engine's durable suspend-and-resume).

    A SUSPENDED stage resumes at once: its suspended task runs again with
    ``_signal_name``, ``_signal_data`` and ``_signal_user`` in its context. A stage that
    has not suspended yet keeps a persistent signal and receives it when it suspends.
    In a ``deferred_choice_group``, the first stage to get a signal wins.

    Raises:
        SignalError: the stage does not exist, has finished, or is not waiting and the
            signal is not persistent.
    """
    fx = Effects()
    stage = wf.index.by_id.get(stage_id) or wf.index.by_ref.get(stage_id)
    if stage is None:
        raise SignalError(f"workflow {wf.id} has no stage {stage_id!r}")
    if wf.status.is_complete or stage.status.is_complete:
        state = stage.status if not wf.status.is_complete else wf.status
        raise SignalError(
            f"stage {stage.ref_id!r} of workflow {wf.id} takes no more signals: it is {state.value}"
        )
    signal = {"name": name, "data": dict(data or {}), "user": user, "at": now}
    if stage.status is S.SUSPENDED:
        _deliver_signal(wf, stage, signal, now, fx)
    elif persistent:
        stage.pending_signals.append(signal)
        fx.touch(stage)
        fx.emit("signal.queued", "stage", stage.id, name=name, data=signal["data"], user=user)
    else:
        raise SignalError(
            f"stage {stage.ref_id!r} is not waiting for a signal (it is {stage.status.value}) "
            "and the signal is not persistent"
        )
    return fx


@_transition
def signal_timeout(wf: Workflow, stage_id: str, task_id: str, run: int, now: int) -> Effects:
    """A suspended task's timer ran out: resume it with the signal ``timeout``.

    Stale when the task was resumed (or restarted) since it suspended with that timer.
    """
    fx = Effects()
    stage = wf.index.by_id.get(stage_id)
    task = _find_task(stage, task_id)
    if (
        stage is None
        or task is None
        or stage.status is not S.SUSPENDED
        or task.status is not S.SUSPENDED
        or task.version != run
        or wf.status.is_complete
    ):
        fx.stale = True
        return fx
    signal: dict[str, Any] = {"name": "timeout", "data": {}, "user": None, "at": now}
    _deliver_signal(wf, stage, signal, now, fx)
    return fx


def _deliver_signal(
    wf: Workflow, stage: StageExecution, signal: dict[str, Any], now: int, fx: Effects
) -> None:
    task = next(t for t in stage.tasks if t.status is S.SUSPENDED)
    fx.drop_timers.append((SIGNAL_TIMEOUT, stage.id))
    stage.context["_signal_name"] = signal["name"]
    stage.context["_signal_data"] = signal["data"]
    stage.context["_signal_user"] = signal.get("user")
    task.status = S.RUNNING
    task.version += 1
    mark_stage(wf, stage, S.RUNNING)
    fx.touch(stage)
    fx.emit(
        "stage.resumed",
        "stage",
        stage.id,
        signal=signal["name"],
        data=signal["data"],
        user=signal.get("user"),
    )
    fx.messages.append(_run_task(wf, stage, task, 0))
    if stage.deferred_choice_group is not None:
        _choose(wf, stage, now, fx)


def _choose(wf: Workflow, chosen: StageExecution, now: int, fx: Effects) -> None:
    """Deferred choice: ``chosen`` was triggered first; withdraw the rest of its group."""
    group = chosen.deferred_choice_group
    rivals = [
        s
        for s in wf.stages
        if s.deferred_choice_group == group and s is not chosen and not s.status.is_complete
    ]
    if not rivals:
        return
    fx.emit("choice.made", "stage", chosen.id, group=group, chosen=chosen.ref_id)
    for rival in rivals:
        if rival.status is S.NOT_STARTED:
            mark_stage(wf, rival, S.SKIPPED)
            rival.status_reason = "withdrawn"
            rival.end_time = now
            fx.touch(rival)
            fx.emit("stage.skipped", "stage", rival.id, status="SKIPPED", reason="withdrawn")
        else:
            _cancel_stage(wf, rival, "withdrawn", now, fx)
    for rival in rivals:
        _propagate(wf, rival, now, fx)


def region_refs(wf: Workflow, region: str) -> list[str]:
    """The ``ref_id`` of every stage whose ``cancel_region`` is ``region``."""
    return [s.ref_id for s in wf.stages if s.cancel_region == region]


@_transition
def stage_deadline(wf: Workflow, stage_id: str, started: int, now: int) -> Effects:
    """A stage's deadline came: fail it, or route to ``deadline_route``, if it still runs.

    ``started`` is the start time of the run the deadline was set for; a stage restarted
    since (a loop) has a deadline of its own.
    """
    fx = Effects()
    stage = wf.index.by_id.get(stage_id)
    if (
        stage is None
        or stage.start_time != started
        or stage.id not in wf.index.active
        or wf.status.is_complete
    ):
        fx.stale = True
        return fx
    message = f"stage {stage.ref_id!r} exceeded its deadline of {stage.deadline_seconds:g}s"
    running = next((t for t in stage.tasks if t.status in _LIVE_TASK), None)
    fx.emit("stage.deadline", "stage", stage.id, route=stage.deadline_route)
    if stage.deadline_route is None or running is None:
        for task in stage.tasks:
            if task.status in _LIVE_TASK:
                task.status = S.CANCELED
                task.end_time = now
        if stage.status is S.SUSPENDED:
            mark_stage(wf, stage, S.RUNNING)
        _complete_stage(wf, stage, S.TERMINAL, now, fx, error=message)
        return fx
    running.status = S.RUNNING  # a suspended task is routed like a running one
    outcome = TaskOutcome(S.REDIRECT, target_stage_ref_id=stage.deadline_route, error=message)
    if stage.status is S.SUSPENDED:
        mark_stage(wf, stage, S.RUNNING)
    _redirect(wf, stage, running, outcome, now, fx)
    if stage.status.is_complete:
        stage.status_reason = "deadline_routed"
    fx.touch(stage)
    return fx


@_transition
def cancel_workflow(wf: Workflow, user: str | None, reason: str | None, now: int) -> Effects:
    """Cancel a workflow: running stages and tasks end CANCELED and nothing runs after."""
    fx = Effects()
    if wf.status.is_complete:
        fx.stale = True
        return fx
    wf.is_canceled = True
    wf.canceled_by = user
    wf.cancellation_reason = reason
    _end_workflow(wf, S.CANCELED, now, fx, error=None)
    return fx


@_transition
def fail_workflow(wf: Workflow, error: str, now: int) -> Effects:
    """End a workflow that cannot run (say, a task type no worker knows) TERMINAL."""
    fx = Effects()
    if wf.status.is_complete:
        fx.stale = True
        return fx
    if wf.start_time is None:
        wf.start_time = now
    _end_workflow(wf, S.TERMINAL, now, fx, error=error)
    return fx


@_transition
def pause_workflow(wf: Workflow, now: int) -> Effects:
    """Pause a running workflow: tasks in flight finish, no new task starts."""
    fx = Effects()
    if wf.status is not S.RUNNING:
        fx.stale = True
        return fx
    wf.status = S.PAUSED
    wf.paused = True
    fx.workflow_changed = True
    fx.emit("workflow.paused", "workflow", wf.id)
    return fx


@_transition
def resume_workflow(wf: Workflow, now: int) -> Effects:
    """Resume a paused workflow: every task parked by the pause is queued again."""
    fx = Effects()
    if wf.status is not S.PAUSED:
        fx.stale = True
        return fx
    wf.status = S.RUNNING
    wf.paused = False
    fx.workflow_changed = True
    fx.emit("workflow.resumed", "workflow", wf.id)
    for stage in wf.stages:
        for task in stage.tasks:
            if task.status is S.PAUSED:
                task.status = S.RUNNING
                fx.touch(stage)
                fx.messages.append(_run_task(wf, stage, task, 0))
    _maybe_complete_workflow(wf, now, fx)
    return fx


_LIVE_TASK = (S.RUNNING, S.PAUSED, S.SUSPENDED)


def _cancel_stage(
    wf: Workflow,
    stage: StageExecution,
    reason: str,
    now: int,
    fx: Effects,
    *,
    user: str | None = None,
    note: str | None = None,
) -> None:
    """End a stage CANCELED without failing the workflow (its paths become dead)."""
    for task in stage.tasks:
        if task.status in _LIVE_TASK:
            task.status = S.CANCELED
            task.end_time = now
    mark_stage(wf, stage, S.CANCELED)
    stage.status_reason = reason
    stage.end_time = now
    fx.touch(stage)
    fx.drop_timers.extend([(STAGE_DEADLINE, stage.id), (SIGNAL_TIMEOUT, stage.id)])
    fx.emit(
        "stage.canceled", "stage", stage.id, status="CANCELED", reason=reason, user=user, note=note
    )
    _cancel_children(wf, stage, fx)
    if stage.mi_config is not None:
        for instance in _instances(wf, stage):
            if instance.id in wf.index.active:
                _cancel_stage(wf, instance, reason, now, fx, user=user, note=note)
            elif instance.status is S.NOT_STARTED:
                mark_stage(wf, instance, S.SKIPPED)
                instance.status_reason = "withdrawn"
                instance.end_time = now
                fx.touch(instance)


def _cancel_children(wf: Workflow, stage: StageExecution, fx: Effects) -> None:
    """Cancel the sub-workflow a canceled stage was waiting for (a message to the child)."""
    child = stage.context.get("_sub_workflow_id")
    if isinstance(child, str):
        payload = {"user": "stabilize", "reason": f"parent {wf.id} stage {stage.ref_id!r} ended"}
        fx.messages.append(Message(CANCEL_WORKFLOW, child, payload=payload))


def _find_task(stage: StageExecution | None, task_id: str) -> TaskExecution | None:
    if stage is None:
        return None
    for task in stage.tasks:
        if task.id == task_id:
            return task
    return None


def _task_event(status: WorkflowStatus) -> str:
    if status is S.SUSPENDED:
        return "task.suspended"
    return "task.failed" if status.is_failure else "task.completed"


def _run_task(wf: Workflow, stage: StageExecution, task: TaskExecution, delay: int) -> Message:
    # "run" names this run of the task: a result for an older run (before a jump or a
    # deadline restarted it) is recognised as stale.
    return Message(RUN_TASK, wf.id, stage.id, task.id, {"run": task.version}, delay_ms=delay)


def _next_task(stage: StageExecution, task: TaskExecution) -> TaskExecution | None:
    tasks = stage.tasks
    i = tasks.index(task)
    return tasks[i + 1] if i + 1 < len(tasks) else None


def _start_stage(wf: Workflow, stage: StageExecution, now: int, fx: Effects) -> None:
    if stage.milestone_ref_id is not None:
        verdict = _milestone(wf, stage)
        if verdict == "wait":
            # Recorded on the stage too, so that a reload (another worker) keeps waiting.
            wf.index.milestone_waiting.add(stage.ref_id)
            if stage.status_reason != "waiting_for_milestone":
                stage.status_reason = "waiting_for_milestone"
                fx.touch(stage)
            return
        wf.index.milestone_waiting.discard(stage.ref_id)
        if verdict == "passed":
            _skip_stage(wf, stage, "milestone_passed", now, fx)
            return
    enabled = stage.context.get("stageEnabled")
    if enabled is not None:
        try:
            run = is_true(enabled, wf.task_context(stage))
        except ExpressionError as exc:
            mark_stage(wf, stage, S.RUNNING)
            message = f"stage {stage.ref_id!r}: stageEnabled: {exc}"
            _complete_stage(wf, stage, S.TERMINAL, now, fx, error=message)
            return
        if not run:
            _skip_stage(wf, stage, "disabled", now, fx)
            return
    if stage.mutex_key is not None and not stage.mutex_held:
        mark_stage(wf, stage, S.BUFFERED)
        stage.status_reason = "waiting_for_mutex"
        fx.touch(stage)
        fx.emit("stage.buffered", "stage", stage.id, mutex_key=stage.mutex_key)
        fx.messages.append(
            Message(ACQUIRE_MUTEX, wf.id, stage.id, payload={"key": stage.mutex_key})
        )
        return
    stage.status_reason = None
    mark_stage(wf, stage, S.RUNNING)
    stage.start_time = now
    stage.end_time = None
    fx.touch(stage)
    fx.emit("stage.started", "stage", stage.id, ref_id=stage.ref_id)
    if stage.deadline_seconds is not None:
        fx.messages.append(
            Message(
                STAGE_DEADLINE,
                wf.id,
                stage.id,
                payload={"started": now},
                delay_ms=int(stage.deadline_seconds * 1000),
            )
        )
    if stage.mi_config is not None:
        _expand(wf, stage, now, fx)
        return
    if stage.tasks:
        _start_task(wf, stage, stage.tasks[0], now, fx)
    else:
        _complete_stage(wf, stage, S.SUCCEEDED, now, fx, error=None)


def _milestone(wf: Workflow, stage: StageExecution) -> str:
    """Whether a stage may start given its milestone: ``run``, ``passed`` or ``wait``.

    ``run`` while the milestone stage is in the state, ``passed`` once it has finished in
    another state, ``wait`` before.
    """
    assert stage.milestone_ref_id is not None
    milestone = wf.index.by_ref[stage.milestone_ref_id]
    if milestone.status is stage.milestone_status:
        return "run"
    return "passed" if milestone.status.is_complete else "wait"


def _start_task(
    wf: Workflow, stage: StageExecution, task: TaskExecution, now: int, fx: Effects
) -> None:
    task.status = S.RUNNING
    task.start_time = now
    task.end_time = None
    task.version += 1
    fx.touch(stage)
    fx.emit("task.started", "task", task.id, stage_id=stage.id, name=task.name)
    fx.messages.append(_run_task(wf, stage, task, 0))


def _skip_stage(wf: Workflow, stage: StageExecution, reason: str, now: int, fx: Effects) -> None:
    """End a stage SKIPPED without running it; ``reason`` says why (see DEAD_REASONS)."""
    mark_stage(wf, stage, S.SKIPPED)
    stage.status_reason = reason
    stage.end_time = now
    fx.touch(stage)
    fx.emit("stage.skipped", "stage", stage.id, status=S.SKIPPED.value, reason=reason)
    _propagate(wf, stage, now, fx)
    _maybe_complete_workflow(wf, now, fx)


def _complete_stage(
    wf: Workflow,
    stage: StageExecution,
    status: WorkflowStatus,
    now: int,
    fx: Effects,
    *,
    error: str | None,
) -> None:
    if stage.split_conditions and status in (S.SUCCEEDED, S.FAILED_CONTINUE):
        try:
            stage.branches_not_taken = _branches_not_taken(wf, stage)
        except ExpressionError as exc:
            status, error = S.TERMINAL, f"stage {stage.ref_id!r}: split condition: {exc}"
    mark_stage(wf, stage, status)
    stage.end_time = now
    fx.touch(stage)
    if stage.deadline_seconds is not None:
        fx.drop_timers.append((STAGE_DEADLINE, stage.id))
    event = {
        S.SKIPPED: "stage.skipped",
        S.CANCELED: "stage.canceled",
    }.get(status, "stage.failed" if status.is_failure else "stage.completed")
    fx.emit(event, "stage", stage.id, status=status.value, error=error)
    if status.is_halt and _only_feeds_fired_joins(wf, stage):
        # A straggler of a quorum or first-wins join that already fired: its failure can
        # change nothing downstream, so it is recorded and otherwise ignored.
        stage.status_reason = "late_straggler"
    elif status.is_halt:
        _end_workflow(wf, status, now, fx, error=error)
        if wf.error is None:
            wf.error = f"stage {stage.ref_id!r} ended {status.value}"
        return
    _propagate(wf, stage, now, fx)
    multi_merge = stage.join_type is JoinType.MULTI_MERGE
    if multi_merge and stage.multi_merge_pending > 0 and not wf.status.is_complete:
        pending = stage.multi_merge_pending - 1
        _restart_stage(wf, stage, now, fx)
        stage.multi_merge_pending = pending
        return
    _maybe_complete_workflow(wf, now, fx)


def _only_feeds_fired_joins(wf: Workflow, stage: StageExecution) -> bool:
    """True when every path from ``stage`` ends in a quorum join that already fired.

    A quorum join is N_OF_M or DISCRIMINATOR; the paths may pass through stages that have
    not started.
    """
    children = wf.index.downstream[stage.ref_id]
    if not children:
        return False
    for child in children:
        fired = child.join_type in (JoinType.N_OF_M, JoinType.DISCRIMINATOR) and (
            child.status is not S.NOT_STARTED
        )
        if fired:
            continue
        if child.status is not S.NOT_STARTED or not _only_feeds_fired_joins(wf, child):
            return False
    return True


def _branches_not_taken(wf: Workflow, stage: StageExecution) -> list[str]:
    env = {**wf.task_context(stage), **stage.outputs}
    return sorted(
        ref for ref, condition in stage.split_conditions.items() if not is_true(condition, env)
    )


def _restart_stage(wf: Workflow, stage: StageExecution, now: int, fx: Effects) -> None:
    mark_stage(wf, stage, S.NOT_STARTED)
    stage.reset()
    _start_stage(wf, stage, now, fx)


def _edge_succeeded(parent: StageExecution, child: StageExecution) -> bool:
    """True when ``parent`` ran successfully and activated ``child`` (what joins count)."""
    return (
        parent.status in (S.SUCCEEDED, S.FAILED_CONTINUE)
        and child.ref_id not in parent.branches_not_taken
    )


def _edge_live(parent: StageExecution, child: StageExecution) -> bool:
    """True when ``parent`` finished and activated ``child`` (succeeded, branch taken)."""
    if parent.status not in (S.SUCCEEDED, S.FAILED_CONTINUE, S.SKIPPED) or parent.is_dead:
        return False
    return child.ref_id not in parent.branches_not_taken


def _propagate(wf: Workflow, stage: StageExecution, now: int, fx: Effects) -> None:
    """Let every child of a finished stage react: start, wait, skip, or merge late."""
    if stage.parent_stage_id is not None:
        parent = wf.index.by_id.get(stage.parent_stage_id)
        if parent is not None and parent.mi_config is not None:
            _instance_done(wf, parent, now, fx)
    for child in wf.index.downstream[stage.ref_id]:
        if child.parent_stage_id is not None:
            continue  # instances are started by their fan-out stage, never by requisites
        if wf.status.is_complete:
            return
        _consider(wf, child, stage, now, fx)


def _consider(
    wf: Workflow, child: StageExecution, trigger: StageExecution, now: int, fx: Effects
) -> None:
    index = wf.index
    ups = index.upstream[child.ref_id]
    all_done = index.pending_upstream[child.ref_id] == 0
    join = child.join_type
    if child.status is S.NOT_STARTED:
        if all_done and not any(_edge_live(u, child) for u in ups):
            _skip_stage(wf, child, "branch_not_taken", now, fx)
        elif join in (JoinType.AND, JoinType.OR):
            if all_done:
                _start_stage(wf, child, now, fx)
        elif join is JoinType.MULTI_MERGE:
            if _edge_succeeded(trigger, child):
                _start_stage(wf, child, now, fx)
        else:
            need = 1 if join is JoinType.DISCRIMINATOR else child.join_threshold
            succeeded = sum(1 for u in ups if _edge_succeeded(u, child))
            if succeeded >= need:
                fx.emit("join.fired", "stage", child.id, succeeded=succeeded, needed=need)
                _start_stage(wf, child, now, fx)
                if child.straggler_policy is StragglerPolicy.CANCEL and not wf.status.is_complete:
                    for stopped in _cancel_stragglers(wf, child, now, fx):
                        _propagate(wf, stopped, now, fx)
            elif all_done:
                mark_stage(wf, child, S.RUNNING)
                message = (
                    f"join {child.ref_id!r} needed {need} of its {len(ups)} requisites to "
                    f"succeed, but only {succeeded} did"
                )
                _complete_stage(wf, child, S.TERMINAL, now, fx, error=message)
        return
    if not _edge_succeeded(trigger, child):
        return
    if join is JoinType.MULTI_MERGE:
        if child.status.is_complete:
            _restart_stage(wf, child, now, fx)
        else:
            child.multi_merge_pending += 1
            fx.touch(child)
    elif (
        join in (JoinType.N_OF_M, JoinType.DISCRIMINATOR)
        and child.straggler_policy is StragglerPolicy.MERGE
        and child.output_reducers
    ):
        late = apply_output_reducers(
            child.output_reducers, [u.outputs for u in wf.joined_upstream(child)]
        )
        child.outputs.update(late)
        fx.touch(child)
        fx.emit("outputs.updated", "stage", child.id, outputs=late, late_from=trigger.ref_id)


def _expand(wf: Workflow, stage: StageExecution, now: int, fx: Effects) -> None:
    """Dynamic fan-out: add one instance stage per item and start as many as allowed."""
    config = stage.mi_config
    assert config is not None
    items = wf.task_context(stage).get(config.items_key)
    if not isinstance(items, list):
        message = (
            f"stage {stage.ref_id!r}: mi_config.items_key {config.items_key!r} must name a "
            f"list in the stage's context, found {type(items).__name__}"
        )
        _complete_stage(wf, stage, S.TERMINAL, now, fx, error=message)
        return
    # Instance ids derive from the workflow version: unique per expansion, deterministic.
    generation = f"{stage.id}.{wf.version}"
    stage.context["_mi_generation"] = generation
    if not items:
        stage.outputs["instances"] = []
        _complete_stage(wf, stage, S.SUCCEEDED, now, fx, error=None)
        return
    instances = []
    for i, item in enumerate(items):
        inst_id = f"{generation}.{i}"
        ref = f"{stage.ref_id}[{i}]"
        if ref in wf.index.by_ref:  # a fan-out run again by a loop
            ref = f"{ref}@{wf.version}"
        instance = StageExecution(
            id=inst_id,
            ref_id=ref,
            type=stage.type,
            name=f"{stage.name or stage.ref_id} [{i}]",
            context={
                **{k: v for k, v in stage.context.items() if not k.startswith("_mi_")},
                config.item_key: item,
                "_mi_index": i,
            },
            tasks=[
                TaskExecution(
                    id=f"{inst_id}.{j}",
                    name=t.name,
                    implementing_class=t.implementing_class,
                    stage_start=t.stage_start,
                    stage_end=t.stage_end,
                )
                for j, t in enumerate(stage.tasks)
            ],
            requisite_stage_ref_ids=set(stage.requisite_stage_ref_ids),
            parent_stage_id=stage.id,
        )
        instance._workflow = wf
        wf.stages.append(instance)
        wf.index.add(instance)
        fx.new_stages.append(instance)
        instances.append(instance)
    fx.emit("stage.expanded", "stage", stage.id, instances=len(instances))
    limit = config.max_concurrency or len(instances)
    for instance in instances[:limit]:
        _start_stage(wf, instance, now, fx)


def _instances(wf: Workflow, parent: StageExecution) -> list[StageExecution]:
    """The instances of the fan-out stage's current run, in item order."""
    prefix = f"{parent.context.get('_mi_generation')}."
    return [s for s in wf.stages if s.parent_stage_id == parent.id and s.id.startswith(prefix)]


def _instance_done(wf: Workflow, parent: StageExecution, now: int, fx: Effects) -> None:
    """An instance of a fan-out finished: start the next, or complete the fan-out stage."""
    config = parent.mi_config
    if parent.status is not S.RUNNING or config is None or wf.status.is_complete:
        return
    instances = _instances(wf, parent)
    succeeded = [s for s in instances if s.status in (S.SUCCEEDED, S.FAILED_CONTINUE)]
    finished = sum(1 for s in instances if s.status.is_complete)
    need = config.join_threshold or len(instances)
    if len(succeeded) < need and finished < len(instances):
        running = sum(1 for s in instances if s.id in wf.index.active)
        limit = config.max_concurrency or len(instances)
        for instance in instances:
            if running >= limit:
                break
            if instance.status is S.NOT_STARTED:
                _start_stage(wf, instance, now, fx)
                running += 1
        return
    for instance in instances:
        if instance.id in wf.index.active:
            _cancel_stage(wf, instance, "straggler", now, fx)
        elif instance.status is S.NOT_STARTED:
            mark_stage(wf, instance, S.SKIPPED)
            instance.status_reason = "withdrawn"
            fx.touch(instance)
    if len(succeeded) < need:
        message = (
            f"stage {parent.ref_id!r}: {need} of its {len(instances)} instances had to "
            f"succeed, but only {len(succeeded)} did"
        )
        _complete_stage(wf, parent, S.TERMINAL, now, fx, error=message)
        return
    winners = {s.id for s in succeeded}
    parent.outputs["instances"] = [s.outputs if s.id in winners else None for s in instances]
    if parent.output_reducers:
        parent.outputs.update(
            apply_output_reducers(parent.output_reducers, [s.outputs for s in succeeded])
        )
    _complete_stage(wf, parent, S.SUCCEEDED, now, fx, error=None)


def _cancel_stragglers(
    wf: Workflow, join: StageExecution, now: int, fx: Effects
) -> list[StageExecution]:
    """Stop what still runs upstream of a join that has fired, and withdraw what has not.

    Returns the stages it stopped, whose other children must then be reconsidered.
    """
    index = wf.index
    stopped: list[StageExecution] = []
    for stage in index.ancestors(join.ref_id):
        if stage.id in index.active:
            _cancel_stage(wf, stage, "straggler", now, fx)
            stopped.append(stage)
        elif stage.status is S.NOT_STARTED:
            stopped.append(stage)
            mark_stage(wf, stage, S.SKIPPED)
            stage.status_reason = "withdrawn"
            stage.end_time = now
            fx.touch(stage)
            fx.emit("stage.skipped", "stage", stage.id, status="SKIPPED", reason="withdrawn")
    return stopped


def _maybe_complete_workflow(wf: Workflow, now: int, fx: Effects) -> None:
    """Note that the workflow may be done; :func:`_transition` decides at the end."""
    if wf.status is S.RUNNING and not wf.index.active:
        wf.index.completion_at = now


def _end_workflow(
    wf: Workflow, status: WorkflowStatus, now: int, fx: Effects, *, error: str | None
) -> None:
    """End the workflow early: stop every active stage and drop its queued messages."""
    for stage in wf.stages:
        if stage.id not in wf.index.active:
            continue
        for task in stage.tasks:
            if task.status in (S.RUNNING, S.PAUSED, S.SUSPENDED):
                task.status = S.CANCELED
                task.end_time = now
        mark_stage(wf, stage, S.CANCELED)
        stage.end_time = now
        fx.touch(stage)
        fx.emit("stage.canceled", "stage", stage.id, status=S.CANCELED.value)
        _cancel_children(wf, stage, fx)
    wf.status = status
    wf.end_time = now
    if error is not None:
        wf.error = error
    fx.workflow_changed = True
    fx.drop_messages = True
    event = "workflow.canceled" if status is S.CANCELED else "workflow.failed"
    fx.emit(event, "workflow", wf.id, status=status.value, error=error)


def _redirect(
    wf: Workflow,
    stage: StageExecution,
    task: TaskExecution,
    outcome: TaskOutcome,
    now: int,
    fx: Effects,
) -> None:
    limit = wf.max_jumps()
    target_ref = outcome.target_stage_ref_id or stage.ref_id
    if wf.jump_count >= limit:
        message = (
            f"stage {stage.ref_id!r} tried to jump to {target_ref!r} after {wf.jump_count} "
            f"jumps; the limit is {limit} (set the workflow context key _max_jumps to change it)"
        )
        _fail_task(wf, stage, task, message, now, fx)
        return
    target = wf.index.by_ref.get(target_ref)
    if target is None:
        _fail_task(wf, stage, task, f"jump_to: no stage {target_ref!r} in this workflow", now, fx)
        return
    index = wf.index
    wf.jump_count += 1
    # Counted on the jumping stage's own context, which survives the reset of a loop.
    stage.context["_jump_count"] = int(stage.context.get("_jump_count", 0)) + 1
    fx.workflow_changed = True
    fx.emit(
        "jump.executed",
        "stage",
        stage.id,
        source=stage.ref_id,
        target=target_ref,
        jump_count=wf.jump_count,
        context=outcome.context,
    )
    if outcome.target_stage_ref_id is None:
        # A plain redirect restarts the current stage's tasks from the first.
        stage.context.update(outcome.context)
        for t in stage.tasks:
            t.reset()
        _start_task(wf, stage, stage.tasks[0], now, fx)
        return
    ancestors = {a.ref_id for a in index.ancestors(stage.ref_id)}
    if target_ref == stage.ref_id or target_ref in ancestors:
        between = index.descendants(target_ref) & (ancestors | {stage.ref_id})
        for ref in sorted(between | {target_ref}, key=index.topo_position.__getitem__):
            reset = index.by_ref[ref]
            mark_stage(wf, reset, S.NOT_STARTED)
            reset.reset()
            fx.touch(reset)
        target.context.update(outcome.context)
        target.context.update(outcome.outputs)
        _start_stage(wf, target, now, fx)
        return
    if target_ref not in index.descendants(stage.ref_id):
        _fail_task(
            wf,
            stage,
            task,
            f"jump_to: {target_ref!r} is neither an ancestor nor a descendant of {stage.ref_id!r}",
            now,
            fx,
        )
        return
    # A forward jump: the stages between are skipped and the target runs next. The
    # jumping stage completes, so its outputs flow on like any stage's.
    target.context.update(outcome.context)
    stage.outputs.update(outcome.outputs)
    fx.touch(target)
    task.status = S.SUCCEEDED
    task.end_time = now
    skipped = index.descendants(stage.ref_id) & {a.ref_id for a in index.ancestors(target_ref)}
    skipped_stages = sorted(
        (index.by_ref[ref] for ref in skipped), key=lambda s: index.topo_position[s.ref_id]
    )
    for between_stage in skipped_stages:
        if between_stage.status is S.NOT_STARTED:
            mark_stage(wf, between_stage, S.SKIPPED)
            fx.touch(between_stage)
            fx.emit("stage.skipped", "stage", between_stage.id, status=S.SKIPPED.value)
    mark_stage(wf, stage, S.SUCCEEDED)
    stage.end_time = now
    fx.emit("stage.completed", "stage", stage.id, status=S.SUCCEEDED.value, error=None)
    for done in [stage, *skipped_stages]:
        _propagate(wf, done, now, fx)
    _maybe_complete_workflow(wf, now, fx)


def _fail_task(
    wf: Workflow,
    stage: StageExecution,
    task: TaskExecution,
    message: str,
    now: int,
    fx: Effects,
) -> None:
    task.status = S.TERMINAL
    task.end_time = now
    task.task_exception_details = {"message": message}
    fx.emit("task.failed", "task", task.id, stage_id=stage.id, status="TERMINAL", error=message)
    _complete_stage(wf, stage, S.TERMINAL, now, fx, error=message)
