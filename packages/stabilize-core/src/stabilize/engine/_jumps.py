"""``jump_to`` inside a transition: loops back, and forward jumps that skip stages."""

from __future__ import annotations

from stabilize.engine._flow import (
    S,
    TaskOutcome,
    _choose,
    _fail_task,
    _maybe_complete_workflow,
    _propagate,
    _start_stage,
    _start_task,
    mark_stage,
)
from stabilize.models.event import EventType
from stabilize.models.stage import StageExecution
from stabilize.models.task import TaskExecution
from stabilize.models.workflow import Workflow
from stabilize.records import Effects


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
    # Counted on the jumping stage, which keeps it through the reset of a loop.
    stage.jump_count += 1
    fx.workflow_changed = True
    fx.emit(
        EventType.JUMP_EXECUTED,
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
        _hand_state(stage, outcome)
        _start_task(wf, stage, stage.tasks[0], now, fx)
        return
    ancestors = {a.ref_id for a in index.ancestors(stage.ref_id)}
    if target_ref == stage.ref_id or target_ref in ancestors:
        between = index.descendants(target_ref) & (ancestors | {stage.ref_id})
        for ref in sorted(between | {target_ref}, key=index.topo_position.__getitem__):
            reset = index.by_ref[ref]
            mark_stage(wf, reset, S.NOT_STARTED, fx)
            reset.reset()
            fx.touch(reset)
        target.context.update(outcome.context)
        target.context.update(outcome.outputs)
        _hand_state(target, outcome)
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
    _hand_state(target, outcome)
    stage.update_outputs(outcome.outputs)
    fx.touch(target)
    task.status = S.SUCCEEDED
    task.end_time = now
    skipped = index.descendants(stage.ref_id) & {a.ref_id for a in index.ancestors(target_ref)}
    skipped_stages = sorted(
        (index.by_ref[ref] for ref in skipped), key=lambda s: index.topo_position[s.ref_id]
    )
    for between_stage in skipped_stages:
        if between_stage.status is S.NOT_STARTED:
            mark_stage(wf, between_stage, S.SKIPPED, fx)
            fx.touch(between_stage)
            fx.emit(EventType.STAGE_SKIPPED, "stage", between_stage.id, status=S.SKIPPED.value)
    mark_stage(wf, stage, S.SUCCEEDED, fx)
    stage.end_time = now
    fx.emit(EventType.STAGE_COMPLETED, "stage", stage.id, status=S.SUCCEEDED.value, error=None)
    if stage.deferred_choice_group is not None:
        # It completed (by a jump or a deadline route): it is the group's choice.
        _choose(wf, stage, now, fx)
    for done in [stage, *skipped_stages]:
        _propagate(wf, done, now, fx)
    _maybe_complete_workflow(wf, now, fx)


def _hand_state(target: StageExecution, outcome: TaskOutcome) -> None:
    """Give the first task of the jump's target the state the jump carries, if any."""
    if outcome.state is not None and target.tasks:
        target.tasks[0].state = dict(outcome.state)
