"""Signals inside a transition: delivering one to the stage that waits for it."""

from __future__ import annotations

from typing import Any

from stabilize.engine._flow import (
    S,
    _choose,
    _run_task,
    mark_stage,
)
from stabilize.message_kinds import SIGNAL_TIMEOUT
from stabilize.models.event import EventType
from stabilize.models.stage import StageExecution
from stabilize.models.workflow import Workflow
from stabilize.records import Effects


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
