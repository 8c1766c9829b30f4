"""The state machine: pure transitions from (workflow, message) to effects.

Every function here takes the in-memory workflow, changes it in place and returns the
:class:`~stabilize.records.Effects` the processor must commit in one transaction:
the rows to write, the messages to enqueue and the events to record. Nothing here reads a
clock, draws an id or touches a database: ``now`` (epoch milliseconds) and the task's
outcome are passed in, so the same inputs always give the same result and replay is exact.
If the commit fails, the processor throws the in-memory workflow away and reloads it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec

from stabilize._json import describe_unencodable
from stabilize.engine._flow import (
    _LIVE_TASK,
    S,
    TaskOutcome,
    _cancel_stage,
    _choose,
    _complete_stage,
    _end_workflow,
    _find_task,
    _maybe_complete_workflow,
    _next_task,
    _propagate,
    _release_choice,
    _run_task,
    _start_stage,
    _start_task,
    _task_event,
    mark_stage,
)
from stabilize.engine._jumps import _redirect
from stabilize.engine._restart import RestartError
from stabilize.engine._restart import restart_stage as _restart_stage
from stabilize.engine._signals import _deliver_signal
from stabilize.errors import SignalError
from stabilize.message_kinds import RELEASE_MUTEX, SIGNAL_TIMEOUT
from stabilize.models.event import EventType
from stabilize.models.workflow import Workflow
from stabilize.records import Effects, Message

__all__ = [
    "RestartError",
    "TaskOutcome",
    "cancel_stages",
    "cancel_workflow",
    "complete_task",
    "fail_workflow",
    "mark_stage",
    "mutex_granted",
    "pause_workflow",
    "prepare_task",
    "region_refs",
    "restart_stage",
    "resume_workflow",
    "signal_stage",
    "signal_timeout",
    "stage_deadline",
    "start_workflow",
]

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
        at = fx.completed_at
        if at is not None and wf.status is S.RUNNING and not index.active:
            wf.status = S.SUCCEEDED
            wf.end_time = at
            fx.workflow_changed = True
            fx.emit(EventType.WORKFLOW_COMPLETED, "workflow", wf.id, status=S.SUCCEEDED.value)
        for key, stage_id in fx.released_mutexes:
            fx.messages.append(Message(RELEASE_MUTEX, wf.id, stage_id, payload={"key": key}))
        return fx

    return wrapper


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
    fx.emit(EventType.WORKFLOW_STARTED, "workflow", wf.id)
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
        fx.emit(EventType.TASK_PAUSED, "task", task.id, stage_id=stage.id)
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
    if outcome.state is not None and status is not S.REDIRECT:
        task.state = dict(outcome.state)
    if outcome.retry or status is S.RUNNING:
        stage.context.update(outcome.context)
        if outcome.retry:
            task.retry_count += 1
            task.task_exception_details = dict(outcome.error_details or {})
            fx.emit(
                EventType.TASK_RETRIED,
                "task",
                task.id,
                stage_id=stage.id,
                attempt=task.retry_count,
                error=outcome.error,
                delay_ms=outcome.delay_ms,
                context=outcome.context,
            )
        elif outcome.context:
            fx.emit(EventType.CONTEXT_UPDATED, "stage", stage.id, context=outcome.context)
        fx.messages.append(_run_task(wf, stage, task, outcome.delay_ms))
        return fx
    if status is S.REDIRECT:
        _redirect(wf, stage, task, outcome, now, fx)
        return fx
    stage.context.update(outcome.context)
    stage.update_outputs(outcome.outputs)
    task.status = status
    task.end_time = now
    if outcome.error_details is not None or outcome.error is not None:
        task.task_exception_details = dict(outcome.error_details or {"message": outcome.error})
    fx.emit(
        EventType.TASK_COMPLETED if status.is_successful else _task_event(status),
        "task",
        task.id,
        stage_id=stage.id,
        status=status.value,
        context=outcome.context,
        outputs=outcome.outputs,
        error=outcome.error,
    )
    if status is S.SUSPENDED:
        mark_stage(wf, stage, S.SUSPENDED, fx)
        wait = outcome.signal_timeout
        fx.emit(EventType.STAGE_SUSPENDED, "stage", stage.id, timeout_seconds=wait)
        if stage.deferred_choice_group is not None and not stage.pending_signals:
            _release_choice(wf, stage, now, fx)
        if stage.pending_signals:
            _deliver_signal(wf, stage, stage.pending_signals.pop(0), now, fx)
        elif wait is not None:
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
    ``_signal_name`` and ``_signal_data`` in its context and the sender in the stage's
    ``signal_user``. A stage that has not suspended yet keeps a persistent signal and
    receives it when it suspends. In a ``deferred_choice_group``, the first stage to get a
    signal wins.

    Raises:
        SignalError: the stage does not exist, has finished, or is not waiting and the
            signal is not persistent; or the signal's data cannot be stored as JSON
            (the error names the key). Nothing is changed then.
    """
    fx = Effects()
    stage = wf.index.by_id.get(stage_id) or wf.index.by_ref.get(stage_id)
    if stage is None:
        raise SignalError(f"workflow {wf.id} has no stage {stage_id!r}")
    if wf.status.is_complete or stage.status.is_complete:
        state = stage.status if not wf.status.is_complete else wf.status
        whose = "the workflow" if wf.status.is_complete else "the stage"
        raise SignalError(
            f"stage {stage.ref_id!r} of workflow {wf.id} takes no more signals: "
            f"{whose} has ended ({state.value})"
        )
    signal = {"name": name, "data": dict(data or {}), "user": user, "at": now}
    problem = describe_unencodable(signal, f"signal {name!r}")
    if problem is not None:
        raise SignalError(f"stage {stage.ref_id!r} of workflow {wf.id}: {problem}")
    if stage.status is S.SUSPENDED:
        _deliver_signal(wf, stage, signal, now, fx)
    elif persistent:
        stage.pending_signals.append(signal)
        fx.touch(stage)
        fx.emit(
            EventType.SIGNAL_QUEUED, "stage", stage.id, name=name, data=signal["data"], user=user
        )
    else:
        raise SignalError(
            f"stage {stage.ref_id!r} of workflow {wf.id} is not waiting for a signal yet "
            f"(it is {stage.status.value}): send it once the stage waits, or send it with "
            "persistent=True to have it kept and delivered then"
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


restart_stage = _transition(_restart_stage)


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
    fx.emit(EventType.STAGE_DEADLINE, "stage", stage.id, route=stage.deadline_route)
    if stage.deadline_route is None or running is None:
        for task in stage.tasks:
            if task.status in _LIVE_TASK:
                task.status = S.CANCELED
                task.end_time = now
        if stage.status is S.SUSPENDED:
            mark_stage(wf, stage, S.RUNNING, fx)
        _complete_stage(wf, stage, S.TERMINAL, now, fx, error=message)
        return fx
    running.status = S.RUNNING  # a suspended task is routed like a running one
    outcome = TaskOutcome(S.REDIRECT, target_stage_ref_id=stage.deadline_route, error=message)
    if stage.status is S.SUSPENDED:
        mark_stage(wf, stage, S.RUNNING, fx)
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
def fail_workflow(
    wf: Workflow, error: str, now: int, *, stage_id: str | None = None, task_id: str | None = None
) -> Effects:
    """End a workflow that cannot run (say, a task type no worker knows) TERMINAL.

    Args:
        wf: The workflow.
        error: Why it cannot run (becomes ``wf.error``).
        now: The time, in epoch milliseconds.
        stage_id: The stage at fault, if one is: it ends TERMINAL too, so that the reason
            shows on the stage and not only on the workflow (issue 15).
        task_id: The task of that stage at fault: it ends TERMINAL with ``error`` in its
            ``task_exception_details``.
    """
    fx = Effects()
    if wf.status.is_complete:
        fx.stale = True
        return fx
    if wf.start_time is None:
        wf.start_time = now
    if stage_id is not None:
        stage = wf.stage_by_id(stage_id)
        if task_id is not None:
            task = stage.task_by_id(task_id)
            task.status = S.TERMINAL
            task.end_time = now
            task.task_exception_details = {"message": error}
            fx.emit(
                EventType.TASK_FAILED,
                "task",
                task.id,
                stage_id=stage.id,
                status="TERMINAL",
                error=error,
            )
        mark_stage(wf, stage, S.TERMINAL, fx)
        stage.end_time = now
        fx.touch(stage)
        fx.emit(EventType.STAGE_FAILED, "stage", stage.id, status=S.TERMINAL.value, error=error)
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
    fx.emit(EventType.WORKFLOW_PAUSED, "workflow", wf.id)
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
    fx.emit(EventType.WORKFLOW_RESUMED, "workflow", wf.id)
    for stage in wf.stages:
        for task in stage.tasks:
            if task.status is S.PAUSED:
                task.status = S.RUNNING
                fx.touch(stage)
                fx.messages.append(_run_task(wf, stage, task, 0))
    _maybe_complete_workflow(wf, now, fx)
    return fx
