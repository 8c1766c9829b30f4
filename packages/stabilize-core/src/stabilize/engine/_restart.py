"""Restart a finished stage: it and everything downstream of it run again."""

from __future__ import annotations

from stabilize.engine._flow import (
    _ACTIVE_STAGE,
    S,
    _maybe_complete_workflow,
    _start_stage,
    mark_stage,
)
from stabilize.errors import StabilizeError
from stabilize.models.event import EventType
from stabilize.models.stage import StageExecution
from stabilize.models.workflow import Workflow
from stabilize.records import Effects


class RestartError(StabilizeError, ValueError):
    """A stage cannot be restarted; the message says which stage and why."""


def _fan_out_of(wf: Workflow, stage: StageExecution) -> StageExecution | None:
    """The fan-out stage ``stage`` is an instance of, if it is one."""
    parent = wf.index.by_id.get(stage.parent_stage_id) if stage.parent_stage_id else None
    return parent if parent is not None and parent.mi_config is not None else None


def _refuse(wf: Workflow, stage_ref: str) -> StageExecution:
    """The stage to restart, or :class:`RestartError` saying why it cannot be."""
    stage = wf.index.by_id.get(stage_ref) or wf.index.by_ref.get(stage_ref)
    if stage is None:
        raise RestartError(f"workflow {wf.id} has no stage {stage_ref!r}")
    if wf.status is S.CANCELED or wf.is_canceled:
        who = f" by {wf.canceled_by}" if wf.canceled_by else ""
        why = f" ({wf.cancellation_reason})" if wf.cancellation_reason else ""
        raise RestartError(
            f"cannot restart stage {stage.ref_id!r}: workflow {wf.id} was canceled{who}{why}, "
            "and a canceled workflow stays canceled"
        )
    parent = _fan_out_of(wf, stage)
    if parent is not None:
        raise RestartError(
            f"cannot restart stage {stage.ref_id!r} of workflow {wf.id}: it is one instance of "
            f"the fan-out stage {parent.ref_id!r}; restart {parent.ref_id!r} instead"
        )
    if stage.status in _ACTIVE_STAGE:
        raise RestartError(
            f"cannot restart stage {stage.ref_id!r} of workflow {wf.id}: it is "
            f"{stage.status.value}; only a finished stage can be restarted"
        )
    if stage.status is S.NOT_STARTED:
        raise RestartError(
            f"cannot restart stage {stage.ref_id!r} of workflow {wf.id}: it has not run yet"
        )
    index = wf.index
    for ref in sorted(index.descendants(stage.ref_id), key=index.topo_position.__getitem__):
        below = index.by_ref[ref]
        if below.status in _ACTIVE_STAGE:
            raise RestartError(
                f"cannot restart stage {stage.ref_id!r} of workflow {wf.id}: stage "
                f"{below.ref_id!r}, downstream of it, is {below.status.value}; restarting "
                "would run it twice at once"
            )
    return stage


def _stopped_by_end(wf: Workflow, stage: StageExecution) -> bool:
    """True for a stage the workflow's early end canceled (not a user's cancel)."""
    return (
        stage.status is S.CANCELED
        and stage.status_reason is None
        and stage.parent_stage_id is None
        and wf.status.is_complete
    )


def restart_stage(wf: Workflow, stage_ref: str, user: str | None, now: int) -> Effects:
    """Run a finished stage (by id or ``ref_id``) again, and everything downstream of it.

    The stage and its downstream stages go back to NOT_STARTED, tasks too, with their
    outputs, errors and retry counts cleared (their context is kept). If the workflow had
    ended (say TERMINAL, because of this stage), it is RUNNING again, its error cleared,
    and the stages its end stopped mid-run start again as well. Then the stage starts.

    Raises:
        RestartError: the stage does not exist, is running or waiting, has not run yet,
            is one instance of a fan-out, has a downstream stage still running, or the
            workflow was canceled. Nothing is changed then.
    """
    stage = _refuse(wf, stage_ref)
    fx = Effects()
    index = wf.index
    ended = wf.status.is_complete
    stopped = [s for s in wf.stages if s is not stage and _stopped_by_end(wf, s)]
    if ended:
        previous = wf.status
        wf.status = S.RUNNING
        wf.end_time = None
        wf.error = None
        fx.workflow_changed = True
        fx.emit(EventType.WORKFLOW_RESTARTED, "workflow", wf.id, previous=previous.value, user=user)
    fx.emit(EventType.STAGE_RESTARTED, "stage", stage.id, ref_id=stage.ref_id, user=user)
    resets = {stage.ref_id} | index.descendants(stage.ref_id)
    for other in stopped:
        resets |= {other.ref_id} | index.descendants(other.ref_id)
    # Downstream first, so that each join's count of finished requisites stays exact.
    for ref in sorted(resets, key=index.topo_position.__getitem__, reverse=True):
        reset = index.by_ref[ref]
        if _fan_out_of(wf, reset) is not None:
            continue  # instances of an earlier expansion stay as they ended
        mark_stage(wf, reset, S.NOT_STARTED, fx)
        reset.reset()
        fx.touch(reset)
    for start in sorted([stage, *stopped], key=lambda s: index.topo_position[s.ref_id]):
        if start.status is S.NOT_STARTED and not wf.status.is_complete:
            _start_stage(wf, start, now, fx)
    _maybe_complete_workflow(wf, now, fx)
    return fx
