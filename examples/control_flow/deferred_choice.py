"""WCP-16 Deferred Choice: whichever stage is triggered first wins, the other is withdrawn.

┌── by_email (wait_for_signal) ──┐
│        deferred_choice_group   ├── close        the first signal decides
└── by_phone (wait_for_signal) ──┘
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    StageExecution,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("close", lambda s: {"closed_via": s.context["signal_data"]["channel"]})

        workflow = Workflow.create(
            "docs",
            "deferred choice",
            [
                stage("by_email", "wait_for_signal", deferred_choice_group="reply"),
                stage("by_phone", "wait_for_signal", deferred_choice_group="reply"),
                stage("close", "close", {"by_email", "by_phone"}),
            ],
        )
        engine.start(workflow)
        engine.process(timeout=30)  # both stages are now SUSPENDED, waiting
        engine.orchestrator.signal(workflow.id, "by_phone", "replied", {"channel": "phone"})
        engine.process(timeout=30)
        return engine.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.status_reason, s.outputs)
