"""WCP-24 Persistent Trigger and WCP-23 Transient Trigger (signals).

intake (wait_for_signal) ── approve (wait_for_signal)
The "approved" signal is sent to `approve` before it runs: a persistent signal is
kept and consumed when `approve` suspends; a transient one is refused.
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    SignalError,
    StageExecution,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> tuple[Workflow, bool]:
    with WorkflowEngine(db_url) as engine:
        workflow = Workflow.create(
            "docs",
            "triggers",
            [
                stage("intake", "wait_for_signal"),
                stage("approve", "wait_for_signal", {"intake"}),
            ],
        )
        engine.start(workflow)
        engine.process(timeout=30)  # intake waits; approve has not started
        try:  # WCP-23: a transient trigger only reaches a stage that is waiting right now
            engine.orchestrator.signal(workflow.id, "approve", "approved", persistent=False)
            transient_refused = False
        except SignalError:
            transient_refused = True
        # WCP-24: a persistent trigger is stored with the stage until the stage waits for it.
        engine.orchestrator.signal(
            workflow.id, "approve", "approved", {"by": "alice"}, user="alice"
        )
        engine.orchestrator.signal(workflow.id, "intake", "received")
        engine.process(timeout=30)
        return engine.retrieve(workflow.id), transient_refused


if __name__ == "__main__":
    result, refused = main("sqlite:///control_flow_demo.db")
    print(result.status, "transient refused:", refused)
    print(result.stage_by_ref_id("approve").outputs)
