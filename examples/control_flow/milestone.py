"""WCP-18 Milestone: `amend` may run only while `window` is still open (SUSPENDED).

window (wait_for_signal) ................ open until the "close" signal
prepare ──── amend    (milestone_ref_id="window", milestone_status=SUSPENDED)
late_check ── late_amend  (same milestone; reached after the window closed: SKIPPED)
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    StageExecution,
    Workflow,
    WorkflowEngine,
    WorkflowStatus,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("work", lambda s: {s.ref_id: "done"})
        open_window: dict[str, Any] = {
            "milestone_ref_id": "window",
            "milestone_status": WorkflowStatus.SUSPENDED,
        }

        workflow = Workflow.create(
            "docs",
            "milestone",
            [
                stage("window", "wait_for_signal"),
                stage("prepare", "work"),
                stage("amend", "work", {"prepare"}, **open_window),
                stage("late_check", "wait_for_signal"),
                stage("late_amend", "work", {"late_check"}, **open_window),
            ],
        )
        engine.start(workflow)
        engine.process(timeout=30)  # amend ran while the window was open
        engine.orchestrator.signal(workflow.id, "window", "close")
        engine.process(timeout=30)  # the window has closed
        engine.orchestrator.signal(workflow.id, "late_check", "done")
        engine.process(timeout=30)  # late_amend is skipped: its milestone has passed
        return engine.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.status_reason)
