"""Signals and deferred choice inside a transition."""

from __future__ import annotations

from typing import Any

from stabilize.engine._flow import (
    S,
    _cancel_stage,
    _propagate,
    _run_task,
    _start_stage,
    mark_stage,
)
from stabilize.engine.messages import (
    SIGNAL_TIMEOUT,
    Effects,
)
from stabilize.models.event import EventType
from stabilize.models.stage import StageExecution
from stabilize.models.workflow import Workflow


def _deliver_signal(
    wf: Workflow, stage: StageExecution, signal: dict[str, Any], now: int, fx: Effects
) -> None:
    task = next(t for t in stage.tasks if t.status is S.SUSPENDED)
    fx.drop_timers.append((SIGNAL_TIMEOUT, stage.id))
    stage.context["_signal_name"] = signal["name"]
    stage.context["_signal_data"] = signal["data"]
    stage.signal_user = signal.get("user")
    task.status = S.RUNNING
    task.version += 1
    mark_stage(wf, stage, S.RUNNING, fx)
    fx.touch(stage)
    fx.emit(
        EventType.STAGE_RESUMED,
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
