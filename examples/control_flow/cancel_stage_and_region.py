"""WCP-19 Cancel Task and WCP-25 Cancel Region; the rest of the workflow carries on.

review (wait) ── notify        cancel_stage("review"): notify is skipped
lint   (wait, cancel_region="checks") ┐
docs   (wait, cancel_region="checks") ┘  cancel_region("checks")
build  (wait) ── ship          build gets its signal: the workflow SUCCEEDS
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
        workflow = Workflow.create(
            "docs",
            "cancel stage and region",
            [
                stage("review", "wait_for_signal"),
                stage("notify", "noop", {"review"}),
                stage("lint", "wait_for_signal", cancel_region="checks"),
                stage("docs", "wait_for_signal", cancel_region="checks"),
                stage("build", "wait_for_signal"),
                stage("ship", "noop", {"build"}),
            ],
        )
        engine.start(workflow)
        engine.process(timeout=30)  # everything that can wait is waiting
        engine.orchestrator.cancel_stage(workflow.id, "review", user="bob", reason="not needed")
        engine.orchestrator.cancel_region(workflow.id, "checks", user="bob", reason="hotfix")
        engine.orchestrator.signal(workflow.id, "build", "built")
        engine.process(timeout=30)
        return engine.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status)
    for s in result.stages:
        print(" ", s.ref_id, s.status, s.status_reason)
