"""WCP-19 Cancel Task and WCP-25 Cancel Region; the rest of the workflow carries on.

review (wait) ── notify        cancel_stage("review"): notify is skipped
lint   (wait, cancel_region="checks") ┐
docs   (wait, cancel_region="checks") ┘  cancel_region("checks")
build  (wait) ── ship          build gets its signal: the workflow SUCCEEDS
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    Orchestrator,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, task)],
        **flow,
    )


def main(db_url: str) -> Workflow:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    processor = QueueProcessor(queue, store=store, task_registry=TaskRegistry())
    orchestrator = Orchestrator(queue, store=store)

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
    orchestrator.start(workflow)
    processor.process_all(timeout=30)  # everything that can wait is waiting
    orchestrator.cancel_stage(workflow.id, "review", user="bob", reason="not needed")
    orchestrator.cancel_region(workflow.id, "checks", user="bob", reason="hotfix")
    orchestrator.signal(workflow.id, "build", "built")
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status)
    for s in result.stages:
        print(" ", s.ref_id, s.status, s.status_reason)
