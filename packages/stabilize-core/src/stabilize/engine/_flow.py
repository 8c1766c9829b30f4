"""Stage and task lifecycle inside a transition: start, complete, skip, cancel, joins.

The internals of :mod:`stabilize.engine.transitions`: they change the in-memory workflow
and add to the transition's :class:`~stabilize.records.Effects`; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import stabilize.engine._fanout as fanout
from stabilize.expressions import ExpressionError, is_true
from stabilize.message_kinds import (
    ACQUIRE_MUTEX,
    CANCEL_WORKFLOW,
    RUN_TASK,
    SIGNAL_TIMEOUT,
    STAGE_DEADLINE,
)
from stabilize.models.event import EventType
from stabilize.models.stage import JoinType, StageExecution, StragglerPolicy
from stabilize.models.status import WorkflowStatus
from stabilize.models.task import TaskExecution
from stabilize.models.workflow import Workflow
from stabilize.records import Effects, Message
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
        state: The task's new state (``TaskExecution.state``), or ``None`` to keep it; for
            a jump, the state of the target's first task.
        signal_timeout: For ``SUSPENDED``: resume with the signal ``timeout`` after this
            many seconds if no other signal came first.
    """

    status: WorkflowStatus
    context: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    target_stage_ref_id: str | None = None
    error: str | None = None
    error_details: dict[str, Any] | None = None
    delay_ms: int = 0
    retry: bool = False
    state: dict[str, Any] | None = None
    signal_timeout: float | None = None


_ACTIVE_STAGE = frozenset({S.RUNNING, S.SUSPENDED, S.PAUSED, S.BUFFERED})


def mark_stage(wf: Workflow, stage: StageExecution, status: WorkflowStatus, fx: Effects) -> None:
    """Set a stage's status, keeping the index's join and completion counters in step.

    A stage that leaves the active statuses gives up its mutex: the release goes to ``fx``
    and becomes a ReleaseMutex message when the transition ends.
    """
    index = wf.index
    was = stage.status
    was_complete = was.is_complete
    stage.status = status
    if stage.mi_index is not None:
        index.instance_status_changed(stage, was, status)
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
            fx.released_mutexes.append((stage.mutex_key, stage.id))


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
    mark_stage(wf, stage, S.CANCELED, fx)
    stage.status_reason = reason
    stage.end_time = now
    fx.touch(stage)
    fx.drop_timers.extend([(STAGE_DEADLINE, stage.id), (SIGNAL_TIMEOUT, stage.id)])
    fx.emit(
        EventType.STAGE_CANCELED,
        "stage",
        stage.id,
        status="CANCELED",
        reason=reason,
        user=user,
        note=note,
    )
    _cancel_children(wf, stage, fx)
    if stage.mi_config is not None:
        for instance in fanout._instances(wf, stage):
            if instance.id in wf.index.active:
                _cancel_stage(wf, instance, reason, now, fx, user=user, note=note)
            elif instance.status is S.NOT_STARTED:
                mark_stage(wf, instance, S.SKIPPED, fx)
                instance.status_reason = "withdrawn"
                instance.end_time = now
                fx.touch(instance)
    if (
        stage.deferred_choice_group is not None
        and reason != "withdrawn"
        and not wf.status.is_complete
    ):
        # A member canceled on its own was not chosen: the members held while it ran
        # start now, or the workflow would wait for them forever.
        _release_choice(wf, stage, now, fx)


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


def _task_event(status: WorkflowStatus) -> EventType:
    if status is S.SUSPENDED:
        return EventType.TASK_SUSPENDED
    return EventType.TASK_FAILED if status.is_failure else EventType.TASK_COMPLETED


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
            mark_stage(wf, stage, S.RUNNING, fx)
            message = f"stage {stage.ref_id!r}: stageEnabled: {exc}"
            _complete_stage(wf, stage, S.TERMINAL, now, fx, error=message)
            return
        if not run:
            _skip_stage(wf, stage, "disabled", now, fx)
            return
    if stage.mutex_key is not None and not stage.mutex_held:
        mark_stage(wf, stage, S.BUFFERED, fx)
        stage.status_reason = "waiting_for_mutex"
        fx.touch(stage)
        fx.emit(EventType.STAGE_BUFFERED, "stage", stage.id, mutex_key=stage.mutex_key)
        fx.messages.append(
            Message(ACQUIRE_MUTEX, wf.id, stage.id, payload={"key": stage.mutex_key})
        )
        return
    if stage.deferred_choice_group is not None and _hold_for_choice(wf, stage, fx):
        return
    stage.status_reason = None
    mark_stage(wf, stage, S.RUNNING, fx)
    stage.start_time = now
    stage.end_time = None
    fx.touch(stage)
    fx.emit(EventType.STAGE_STARTED, "stage", stage.id, ref_id=stage.ref_id)
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
        fanout._expand(wf, stage, now, fx)
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
    fx.emit(EventType.TASK_STARTED, "task", task.id, stage_id=stage.id, name=task.name)
    fx.messages.append(_run_task(wf, stage, task, 0))


def _skip_stage(wf: Workflow, stage: StageExecution, reason: str, now: int, fx: Effects) -> None:
    """End a stage SKIPPED without running it; ``reason`` says why (see DEAD_REASONS)."""
    mark_stage(wf, stage, S.SKIPPED, fx)
    stage.status_reason = reason
    stage.end_time = now
    fx.touch(stage)
    fx.emit(EventType.STAGE_SKIPPED, "stage", stage.id, status=S.SKIPPED.value, reason=reason)
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
    mark_stage(wf, stage, status, fx)
    stage.end_time = now
    fx.touch(stage)
    if stage.deadline_seconds is not None:
        fx.drop_timers.append((STAGE_DEADLINE, stage.id))
    event = {
        S.SKIPPED: EventType.STAGE_SKIPPED,
        S.CANCELED: EventType.STAGE_CANCELED,
    }.get(status, EventType.STAGE_FAILED if status.is_failure else EventType.STAGE_COMPLETED)
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
    mark_stage(wf, stage, S.NOT_STARTED, fx)
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
            fanout._instance_done(wf, parent, now, fx)
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
            # Only finished requisites can have succeeded: no count (a scan of the
            # requisites) before enough have finished, or a wide join costs O(n²) (issue 13).
            finished = len(ups) - index.pending_upstream[child.ref_id]
            succeeded = (
                sum(1 for u in ups if _edge_succeeded(u, child))
                if finished >= need or all_done
                else 0
            )
            if succeeded >= need:
                fx.emit(EventType.JOIN_FIRED, "stage", child.id, succeeded=succeeded, needed=need)
                _start_stage(wf, child, now, fx)
                if child.straggler_policy is StragglerPolicy.CANCEL and not wf.status.is_complete:
                    for stopped in _cancel_stragglers(wf, child, now, fx):
                        _propagate(wf, stopped, now, fx)
            elif all_done:
                mark_stage(wf, child, S.RUNNING, fx)
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
        child.update_outputs(late)
        fx.touch(child)
        fx.emit(
            EventType.OUTPUTS_UPDATED, "stage", child.id, outputs=late, late_from=trigger.ref_id
        )


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
            mark_stage(wf, stage, S.SKIPPED, fx)
            stage.status_reason = "withdrawn"
            stage.end_time = now
            fx.touch(stage)
            fx.emit(
                EventType.STAGE_SKIPPED, "stage", stage.id, status="SKIPPED", reason="withdrawn"
            )
    return stopped


def _maybe_complete_workflow(wf: Workflow, now: int, fx: Effects) -> None:
    """Note that the workflow may be done; :func:`_transition` decides at the end."""
    if wf.status is S.RUNNING and not wf.index.active:
        fx.completed_at = now


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
        mark_stage(wf, stage, S.CANCELED, fx)
        stage.end_time = now
        fx.touch(stage)
        fx.emit(EventType.STAGE_CANCELED, "stage", stage.id, status=S.CANCELED.value)
        _cancel_children(wf, stage, fx)
    wf.status = status
    wf.end_time = now
    if error is not None:
        wf.error = error
    fx.workflow_changed = True
    fx.drop_messages = True
    event = EventType.WORKFLOW_CANCELED if status is S.CANCELED else EventType.WORKFLOW_FAILED
    fx.emit(event, "workflow", wf.id, status=status.value, error=error)


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
    fx.emit(
        EventType.TASK_FAILED, "task", task.id, stage_id=stage.id, status="TERMINAL", error=message
    )
    _complete_stage(wf, stage, S.TERMINAL, now, fx, error=message)


# -- deferred choice (WCP-16): part of the flow, since starting a stage may hold it ---------


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
    fx.emit(EventType.CHOICE_MADE, "stage", chosen.id, group=group, chosen=chosen.ref_id)
    for rival in rivals:
        if rival.status is S.NOT_STARTED or _waits_for_choice(rival):
            mark_stage(wf, rival, S.SKIPPED, fx)
            rival.status_reason = "withdrawn"
            rival.end_time = now
            fx.touch(rival)
            fx.emit(
                EventType.STAGE_SKIPPED, "stage", rival.id, status="SKIPPED", reason="withdrawn"
            )
        else:
            _cancel_stage(wf, rival, "withdrawn", now, fx)
    for rival in rivals:
        _propagate(wf, rival, now, fx)


WAITING_FOR_CHOICE = "waiting_for_choice"
"""The ``status_reason`` of a group stage held BUFFERED while a rival's task runs."""


def _waits_for_choice(stage: StageExecution) -> bool:
    return stage.status is S.BUFFERED and stage.status_reason == WAITING_FOR_CHOICE


def _hold_for_choice(wf: Workflow, stage: StageExecution, fx: Effects) -> bool:
    """Hold ``stage`` (BUFFERED) while a rival in its deferred-choice group runs a task.

    One member's task runs at a time (issue 14): a task that completes makes its stage
    the choice before any rival's task ran; a task that suspends lets the next member
    start, so members that wait for signals all wait, and the first signal decides.
    Returns True when ``stage`` was held.
    """
    group = stage.deferred_choice_group
    busy = any(
        s.deferred_choice_group == group and s is not stage and s.status is S.RUNNING
        for s in wf.stages
    )
    if busy and not _waits_for_choice(stage):
        mark_stage(wf, stage, S.BUFFERED, fx)
        stage.status_reason = WAITING_FOR_CHOICE
        fx.touch(stage)
        fx.emit(EventType.STAGE_BUFFERED, "stage", stage.id, deferred_choice_group=group)
    return busy


def _release_choice(wf: Workflow, stage: StageExecution, now: int, fx: Effects) -> None:
    """``stage`` stopped running without being chosen: start the members held for it."""
    group = stage.deferred_choice_group
    for rival in wf.stages:
        if rival.deferred_choice_group == group and _waits_for_choice(rival):
            _start_stage(wf, rival, now, fx)  # holds it again if another one runs now
