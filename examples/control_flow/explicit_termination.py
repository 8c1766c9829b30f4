"""WCP-43 Explicit Termination (partial): a task ends the whole workflow at once.

watchdog ─────────────── (returns TaskResult.canceled(): the workflow ends CANCELED)
approve (wait_for_signal) ── archive      still waiting: canceled, archive never runs
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    StageExecution,
    TaskResult,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("watchdog", lambda s: TaskResult.canceled(outputs={"why": "expired"}))

        workflow = Workflow.create(
            "docs",
            "explicit termination",
            [
                stage("approve", "wait_for_signal"),
                stage("archive", "noop", {"approve"}),
                stage("watchdog", "watchdog"),
            ],
        )
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status)
    for s in result.stages:
        print(" ", s.ref_id, s.status)
